"""The state store: records open only as written, under the right KEK, for the right vTPM."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from vtpm_manager.kek import KeyEncryptionKey, load_development_kek
from vtpm_manager.store import (
    MigrationMark,
    Record,
    Stamp,
    StateStore,
    StateTampered,
    decode,
    encode,
    open_blob,
    open_record,
    seal_blob,
)


def record(**changes: object) -> Record:
    base = dict(uuid="3f1c0d3e-0000-4000-8000-000000000001", name="vm", engine="builtin",
                created_unix=1, data_key=os.urandom(32), metadata={"k": "v"}, running=True,
                state=b"engine state " * 100)
    base.update(changes)
    return Record(**base)  # type: ignore[arg-type]


KEK = KeyEncryptionKey(os.urandom(32), origin="test")


def test_round_trip(tmp_path: Path) -> None:
    original = record()
    assert decode(encode(original, KEK), KEK, tmp_path / "x.vtpm") == original
    empty = record(state=None, running=False)
    assert decode(encode(empty, KEK), KEK, tmp_path / "x.vtpm") == empty


def test_every_flipped_bit_region_is_refused(tmp_path: Path) -> None:
    blob = encode(record(), KEK)
    for position in (0, 9, 12, 20, len(blob) // 2, len(blob) - 1):
        altered = bytearray(blob)
        altered[position] ^= 0x01
        with pytest.raises(StateTampered):
            decode(bytes(altered), KEK, tmp_path / "x.vtpm")


def test_wrong_kek_and_swapped_uuid_are_refused(tmp_path: Path) -> None:
    blob = encode(record(), KEK)
    with pytest.raises(StateTampered, match="data key"):
        decode(blob, KeyEncryptionKey(os.urandom(32), origin="other"), tmp_path / "x.vtpm")
    other = encode(record(uuid="3f1c0d3e-0000-4000-8000-000000000002"), KEK)
    # Graft one record's wrapped key into another's header: the UUID binding refuses it.
    text = blob.replace(b"3f1c0d3e-0000-4000-8000-000000000001",
                        b"3f1c0d3e-0000-4000-8000-000000000002")
    assert text != other
    with pytest.raises(StateTampered):
        decode(text, KEK, tmp_path / "x.vtpm")


def test_unknown_version_is_refused_not_misread(tmp_path: Path) -> None:
    blob = bytearray(encode(record(), KEK))
    blob[9] = 4  # the u16 version's low byte
    with pytest.raises(StateTampered, match="version 4; this DomS0 reads versions 1, 2, 3"):
        decode(bytes(blob), KEK, tmp_path / "x.vtpm")


@pytest.mark.parametrize("older", [1, 2])
def test_version_is_authenticated_so_v3_cannot_pass_for_an_older(tmp_path: Path,
                                                                  older: int) -> None:
    blob = bytearray(encode(record(), KEK))
    assert blob[9] == 3
    blob[9] = older
    with pytest.raises(StateTampered, match="authentication failed"):
        decode(bytes(blob), KEK, tmp_path / "x.vtpm")


def test_a_migration_mark_round_trips(tmp_path: Path) -> None:
    mark = MigrationMark("migrated", "ab" * 16, "127.0.0.1:7350", "host-b", 3)
    marked = replace(record(), migration=mark, migrations=3, state=None)
    assert decode(encode(marked, KEK), KEK, tmp_path / "x.vtpm") == marked


def test_record_carries_its_rollback_stamp(tmp_path: Path) -> None:
    original = record()
    blob = encode(original, KEK, stamp=Stamp(epoch=7, generation=42))
    assert open_record(blob, KEK, tmp_path / "x.vtpm") == (original, Stamp(7, 42))


def test_generation_counts_saves_without_a_counter(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "vtpms", KEK)
    original = record()
    for _ in range(3):
        store.save(original)
    path = store.path_of(original.uuid)
    assert open_record(path.read_bytes(), KEK, path)[1] == Stamp(0, 3)
    reopened = StateStore(tmp_path / "vtpms", KEK)
    assert reopened.begin_epoch().protected is False
    assert reopened.load_all() == ([original], [])
    reopened.save(original)
    assert open_record(path.read_bytes(), KEK, path)[1] == Stamp(0, 4)
    assert not reopened.manifest_path.exists()


def test_a_record_file_named_for_another_vtpm_is_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "vtpms", KEK)
    a, b = record(name="a"), record(name="b", uuid="3f1c0d3e-0000-4000-8000-00000000000b")
    store.save(a)
    store.save(b)
    store.path_of(b.uuid).write_bytes(store.path_of(a.uuid).read_bytes())
    records, failures = store.load_all()
    assert records == [a]
    assert "vTPM a (" in str(failures[0]) and "named for another vTPM" in str(failures[0])


def test_store_loads_the_good_and_names_the_bad(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "vtpms", KEK)
    good, bad = record(name="good"), record(name="bad",
                                           uuid="3f1c0d3e-0000-4000-8000-00000000000b")
    store.save(good)
    store.save(bad)
    path = store.path_of(bad.uuid)
    path.write_bytes(path.read_bytes()[:-1])
    records, failures = store.load_all()
    assert records == [good]
    assert len(failures) == 1 and "vTPM bad (" in str(failures[0])
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_state_blobs_open_only_for_their_vtpm() -> None:
    mine, other = record(), record(uuid="3f1c0d3e-0000-4000-8000-00000000000c")
    blob = seal_blob(mine, b"state")
    assert open_blob(mine, blob) == b"state"
    with pytest.raises(ValueError):
        open_blob(other, blob)


def test_development_kek_file(tmp_path: Path) -> None:
    path = tmp_path / "kek.dev"
    first = load_development_kek(path)
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    wrapped = first.wrap(b"k" * 32, "owner")
    assert load_development_kek(path).unwrap(wrapped, "owner") == b"k" * 32
    path.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        load_development_kek(path)
