"""DomS0 settings: built-in defaults, then a TOML file, then command-line flags."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:7340"


class ConfigError(Exception):
    """A setting is missing, unknown or of the wrong type; the message says which."""


@dataclass(frozen=True)
class Settings:
    state_dir: Path = Path("/var/lib/doms0")
    listen: str = DEFAULT_LISTEN
    run_dir: Path | None = None  # sockets and engine scratch; a fresh temp dir if unset
    default_engine: str = "builtin"
    log_format: str = "text"  # "text" or "json"
    log_level: str = "INFO"
    grace_seconds: float = 5.0

    def validate(self) -> Settings:
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format must be 'text' or 'json', not {self.log_format!r}")
        if not (self.listen.startswith("unix:") or ":" in self.listen):
            raise ConfigError(f"listen must be HOST:PORT or unix:PATH, not {self.listen!r}")
        return self


_PATHS = {"state_dir", "run_dir"}


def load_settings(config_file: Path | None, overrides: dict[str, Any]) -> Settings:
    """Merge defaults, the TOML file (table ``[doms0]`` or top level) and overrides."""
    settings = Settings()
    known = {f.name for f in fields(Settings)}
    if config_file is not None:
        try:
            data = tomllib.loads(config_file.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read {config_file}: {exc}") from exc
        data = data.get("doms0", data)
        unknown = set(data) - known
        if unknown:
            raise ConfigError(f"{config_file}: unknown settings {', '.join(sorted(unknown))}")
        settings = replace(settings, **_coerce(data))
    given = {k: v for k, v in overrides.items() if v is not None}
    return replace(settings, **_coerce(given)).validate()


def _coerce(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in _PATHS:
            out[key] = Path(value)
        elif key == "grace_seconds":
            out[key] = float(value)
        elif not isinstance(value, str):
            raise ConfigError(f"setting {key} must be a string, not {value!r}")
        else:
            out[key] = value
    return out
