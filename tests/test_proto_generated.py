"""The committed generated code is exactly what grpcio-tools makes of proto/."""

from __future__ import annotations

from pathlib import Path

from domS0.api import regen


def test_generated_code_is_current(tmp_path: Path) -> None:
    written = regen.generate(tmp_path)
    assert written, "no generated files"
    for path in written:
        committed = regen.OUT_DIR / path.name
        assert committed.exists(), f"{committed} is missing: run python -m domS0.api.regen"
        assert committed.read_text() == path.read_text(), (
            f"{committed.name} differs from proto/: run python -m domS0.api.regen")
