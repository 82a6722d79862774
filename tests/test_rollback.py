"""Rollback protection: old copies of a record or of the whole store are refused,
crashes at any step of the bookkeeping are not mistaken for rollbacks."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vtpm_manager import rollback
from vtpm_manager import store as store_module
from vtpm_manager.counter import FileCounter
from vtpm_manager.kek import KeyEncryptionKey
from vtpm_manager.rollback import (
    JOURNAL_NAME,
    MANIFEST_NAME,
    Entry,
    Manifest,
    ManifestState,
    Verdict,
    judge,
)
from vtpm_manager.store import (
    EpochReport,
    ManifestTampered,
    Record,
    RollbackDetected,
    Stamp,
    StateStore,
    StateTampered,
    StoreClosed,
    open_record,
)

KEK = KeyEncryptionKey(os.urandom(32), origin="test")


def make_record(name: str, n: int, state: bytes = b"state") -> Record:
    return Record(uuid=f"3f1c0d3e-0000-4000-8000-{n:012d}", name=name, engine="builtin",
                  created_unix=1, data_key=bytes([n]) * 32, state=state)


class Host:
    """One state folder and one counter that lives apart from it (as a TPM's does)."""

    def __init__(self, root: Path) -> None:
        self.folder = root / "state" / "vtpms"
        self.counter = FileCounter(root / "host-tpm-nv-counter")

    def boot(self, adopt: bool = False) -> tuple[StateStore, EpochReport, list[Record],
                                                  list[StateTampered]]:
        store = StateStore(self.folder, KEK, self.counter)
        report = store.begin_epoch(adopt=adopt)
        records, failures = store.load_all()
        return store, report, records, failures

    def copy(self, to: Path) -> Path:
        shutil.copytree(self.folder, to)
        return to

    def restore(self, copy: Path) -> None:
        shutil.rmtree(self.folder)
        shutil.copytree(copy, self.folder)


@pytest.fixture
def host(tmp_path: Path) -> Host:
    return Host(tmp_path)


def first_run(host: Host) -> tuple[StateStore, Record, Record]:
    store, report, records, failures = host.boot()
    assert (records, failures) == ([], []) and report.protected
    a, b = make_record("alpha", 1), make_record("beta", 2)
    store.save(a)
    store.save(b)
    return store, a, b


def stamp_of(store: StateStore, record: Record) -> Stamp:
    path = store.path_of(record.uuid)
    return open_record(path.read_bytes(), KEK, path)[1]


# -- ordinary life ---------------------------------------------------------------------


def test_clean_restarts_load_everything_and_cost_two_increments_per_run(host: Host) -> None:
    store, a, _ = first_run(host)
    for i in range(100):
        a = a.with_state(b"%d" % i)
        store.save(a)
    assert stamp_of(store, a) == Stamp(epoch=1, generation=101)
    store.close_epoch()
    assert host.counter.read() == 2  # started (0 -> 1), stopped (1 -> 2): not 102

    store, report, records, failures = host.boot()
    assert report.previous_run_clean and report.notes == ()
    assert (sorted(r.name for r in records), failures) == (["alpha", "beta"], [])
    assert report.epoch == host.counter.read() == 3
    store.close_epoch()
    with pytest.raises(StoreClosed):
        store.save(a)


def test_start_sweeps_temporaries_of_interrupted_writes(host: Host) -> None:
    store, a, _ = first_run(host)
    store.close_epoch()
    leftovers = [host.folder / f".{a.uuid}.vtpm.tmp-4242", host.folder / ".MANIFEST.tmp-4242"]
    for path in leftovers:
        path.write_bytes(b"half")
    assert host.boot()[3] == []
    assert not any(path.exists() for path in leftovers)


# -- threat 1: one record replaced by an older copy ------------------------------------


def test_copied_back_old_record_is_refused_by_name(host: Host, tmp_path: Path) -> None:
    store, a, _ = first_run(host)
    old = store.path_of(a.uuid).read_bytes()
    store.save(a.with_state(b"newer"))
    store.close_epoch()
    store, *_ = host.boot()
    store.save(a.with_state(b"newest"))
    store.close_epoch()

    store.path_of(a.uuid).write_bytes(old)
    _, _, records, failures = host.boot()
    assert [r.name for r in records] == ["beta"], "the other vTPM still loads"
    (failure,) = failures
    assert isinstance(failure, RollbackDetected)
    assert f"state record of vTPM alpha ({a.uuid})" in str(failure)
    assert "generation 1" in str(failure) and "says generation 3" in str(failure)
    assert "older copy of this record" in str(failure)


def test_old_copy_from_the_same_crashed_run_is_refused(host: Host) -> None:
    store, a, _ = first_run(host)
    old = store.path_of(a.uuid).read_bytes()
    store.save(a.with_state(b"acknowledged"))
    store.save(a.with_state(b"acknowledged again"))
    store.path_of(a.uuid).write_bytes(old)  # then DomS0 is killed: no close_epoch
    _, report, _, failures = host.boot()
    assert not report.previous_run_clean
    assert len(failures) == 1 and "older copy" in str(failures[0])


# -- threat 2: the whole folder replaced by an older copy ------------------------------


def test_old_whole_state_dir_is_refused_naming_it(host: Host, tmp_path: Path) -> None:
    store, a, _ = first_run(host)
    store.close_epoch()
    copy = host.copy(tmp_path / "backup")
    store, *_ = host.boot()
    store.save(a.with_state(b"later"))
    store.close_epoch()

    host.restore(copy)
    with pytest.raises(RollbackDetected) as caught:
        host.boot()
    message = str(caught.value)
    assert message.startswith(f"state dir {host.folder} refused")
    assert "from epoch 1 but the host counter" in message and "is 4" in message
    assert "older copy of the state was put back" in message


def test_copy_taken_while_running_is_refused_after_a_clean_stop(host: Host,
                                                                 tmp_path: Path) -> None:
    store, a, _ = first_run(host)
    copy = host.copy(tmp_path / "live-backup")  # a disk snapshot while DomS0 runs
    store.save(a.with_state(b"later"))
    store.close_epoch()
    host.restore(copy)
    with pytest.raises(RollbackDetected, match="from epoch 1 but the host counter"):
        host.boot()


def test_copy_from_before_a_crashed_run_is_refused(host: Host, tmp_path: Path) -> None:
    store, a, _ = first_run(host)
    store.close_epoch()
    copy = host.copy(tmp_path / "backup")
    store, *_ = host.boot()
    store.save(a.with_state(b"later"))  # ... and DomS0 is killed
    host.restore(copy)
    with pytest.raises(RollbackDetected):
        host.boot()


def test_copy_taken_during_a_crashed_run_is_the_known_blind_spot(host: Host,
                                                                  tmp_path: Path) -> None:
    """Documented limit: without a clean stop the counter cannot date the copy, and
    the start says so instead of staying silent."""
    store, a, _ = first_run(host)
    copy = host.copy(tmp_path / "live-backup")
    store.save(a.with_state(b"later"))  # ... and DomS0 is killed
    host.restore(copy)
    _, report, records, failures = host.boot()
    assert failures == [] and len(records) == 2
    assert not report.previous_run_clean
    assert "did not stop cleanly" in report.notes[0]


def test_a_counter_behind_the_state_is_refused(host: Host, tmp_path: Path) -> None:
    store, _, _ = first_run(host)
    store.close_epoch()
    host.counter = FileCounter(tmp_path / "another-tpm")
    with pytest.raises(RollbackDetected, match="only 0: it was written with another counter"):
        host.boot()


def test_removed_manifest_is_refused_and_adoption_overrides(host: Host) -> None:
    store, _, _ = first_run(host)
    store.close_epoch()
    (host.folder / MANIFEST_NAME).unlink()
    with pytest.raises(RollbackDetected, match=r"2 record\(s\) but no MANIFEST"):
        host.boot()
    _, report, records, failures = host.boot(adopt=True)
    assert "adopted 2 record(s)" in report.notes[0]
    assert (len(records), failures) == (2, [])


# -- threat 3: deleted records, and deleted records put back ---------------------------


def test_deleted_records_file_put_back_is_refused(host: Host) -> None:
    store, a, _ = first_run(host)
    old = store.path_of(a.uuid).read_bytes()
    store.delete(a.uuid)
    store.close_epoch()
    store.path_of(a.uuid).write_bytes(old)
    _, _, records, failures = host.boot()
    assert [r.name for r in records] == ["beta"]
    assert isinstance(failures[0], RollbackDetected)
    assert "vTPM alpha" in str(failures[0]) and "does not list it" in str(failures[0])


def test_deleted_records_file_put_back_in_the_same_crashed_run_stays_deleted(
        host: Host) -> None:
    store, a, _ = first_run(host)
    old = store.path_of(a.uuid).read_bytes()
    store.delete(a.uuid)
    store.path_of(a.uuid).write_bytes(old)  # ... and DomS0 is killed
    _, report, records, failures = host.boot()
    assert [r.name for r in records] == ["beta"] and failures == []
    assert not store.path_of(a.uuid).exists()
    assert any("finished deleting" in note for note in report.notes)


def test_record_deleted_behind_our_back_is_reported_by_name(host: Host) -> None:
    store, a, _ = first_run(host)
    store.close_epoch()
    store.path_of(a.uuid).unlink()
    _, _, records, failures = host.boot()
    assert [r.name for r in records] == ["beta"]
    assert f"vTPM alpha ({a.uuid})" in str(failures[0]) and "missing" in str(failures[0])


def test_record_from_another_store_is_refused_as_unknown(host: Host, tmp_path: Path) -> None:
    store, _, _ = first_run(host)
    store.close_epoch()
    other = StateStore(tmp_path / "other", KEK)
    stranger = make_record("stranger", 9)
    other.save(stranger)
    shutil.copy(other.path_of(stranger.uuid), store.path_of(stranger.uuid))
    _, _, records, failures = host.boot()
    assert len(records) == 2 and "vTPM stranger" in str(failures[0])


# -- flipped bits ----------------------------------------------------------------------


def flip(path: Path, position: int) -> None:
    blob = bytearray(path.read_bytes())
    blob[position] ^= 0x01
    path.write_bytes(bytes(blob))


@pytest.mark.parametrize("where", [0, 9, 14, 40, -40, -1])
def test_flipped_bit_in_manifest_is_refused_by_name(host: Host, where: int) -> None:
    store, _, _ = first_run(host)
    store.close_epoch()
    flip(host.folder / MANIFEST_NAME, where)
    with pytest.raises(ManifestTampered) as caught:
        host.boot()
    assert str(caught.value).startswith(f"store manifest {host.folder / MANIFEST_NAME}")


@pytest.mark.parametrize("where", [0, 5, 20, -60, -1])
def test_flipped_bit_in_journal_is_refused_by_name(host: Host, where: int) -> None:
    store, a, _ = first_run(host)
    store.save(a.with_state(b"x"))  # ... and DomS0 is killed: the journal holds entries
    flip(host.folder / JOURNAL_NAME, where)
    with pytest.raises(ManifestTampered, match=JOURNAL_NAME):
        host.boot()


def test_flipped_bit_in_a_record_is_still_refused_by_name(host: Host) -> None:
    store, a, _ = first_run(host)
    store.close_epoch()
    flip(store.path_of(a.uuid), -3)
    _, _, records, failures = host.boot()
    assert len(records) == 1
    assert "vTPM alpha" in str(failures[0]) and "authentication failed" in str(failures[0])
    assert not isinstance(failures[0], RollbackDetected)


# -- crash windows: no false alarms ----------------------------------------------------


class Killed(BaseException):
    """Stands for SIGKILL: nothing after this point runs."""


@pytest.fixture
def kill_at(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def arm(owner: object, name: str, *, after: bool = False, call: int = 1) -> None:
        original = getattr(owner, name)
        calls = 0

        def dying(*args: Any, **kwargs: Any) -> Any:
            nonlocal calls
            calls += 1
            if calls < call:
                return original(*args, **kwargs)
            if after:
                original(*args, **kwargs)
            monkeypatch.setattr(owner, name, original)
            raise Killed

        monkeypatch.setattr(owner, name, dying)

    yield arm


def test_killed_between_record_write_and_journal_entry(host: Host, kill_at: Any) -> None:
    store, a, _ = first_run(host)
    kill_at(Manifest, "append")
    with pytest.raises(Killed):
        store.save(a.with_state(b"written, not acknowledged"))
    store, report, records, failures = host.boot()
    assert failures == [] and not report.previous_run_clean
    assert {r.name: r.state for r in records}["alpha"] == b"written, not acknowledged"
    store.save(a.with_state(b"next"))
    assert stamp_of(store, a).generation == 3
    store.close_epoch()
    assert host.boot()[3] == []


def test_killed_inside_a_create_before_the_record_is_written(host: Host,
                                                             kill_at: Any) -> None:
    store, _, _ = first_run(host)
    kill_at(store_module, "atomic_write")
    with pytest.raises(Killed):
        store.save(make_record("gamma", 3))  # journaled as created; no file yet
    _, _, records, failures = host.boot()
    assert (sorted(r.name for r in records), failures) == (["alpha", "beta"], [])
    assert host.boot()[3] == [], "the unfinished create is gone for good"


def test_killed_inside_a_create_after_the_record_is_written(host: Host,
                                                            kill_at: Any) -> None:
    store, _, _ = first_run(host)
    kill_at(Manifest, "append", call=2)  # 1: the create entry, 2: the save entry
    with pytest.raises(Killed):
        store.save(make_record("gamma", 3))
    _, _, records, failures = host.boot()
    assert (sorted(r.name for r in records), failures) == (["alpha", "beta", "gamma"], [])


@pytest.mark.parametrize("after", [False, True], ids=["before-increment", "after-increment"])
def test_killed_around_the_start_increment(host: Host, kill_at: Any, after: bool) -> None:
    store, a, _ = first_run(host)
    store.close_epoch()
    kill_at(host.counter, "increment", after=after)
    with pytest.raises(Killed):
        host.boot()
    store, report, records, failures = host.boot()
    assert (len(records), failures) == (2, [])
    assert report.epoch == host.counter.read()
    store.save(a.with_state(b"fine"))
    store.close_epoch()
    assert host.boot()[3] == []


def test_killed_before_the_stop_increment_still_counts_as_clean(
        host: Host, kill_at: Any, tmp_path: Path) -> None:
    store, _, _ = first_run(host)
    kill_at(host.counter, "increment")
    with pytest.raises(Killed):
        store.close_epoch()
    assert host.counter.read() == 1
    copy = host.copy(tmp_path / "final-state")
    store, report, _, failures = host.boot()
    assert report.previous_run_clean and failures == []
    assert host.counter.read() == 3  # the close finished, then the new start
    store.close_epoch()
    host.restore(copy)  # that final state must not pass for a later one
    with pytest.raises(RollbackDetected):
        host.boot()


def test_killed_between_journaled_delete_and_unlink(host: Host, kill_at: Any) -> None:
    store, a, _ = first_run(host)
    kill_at(store_module, "durable_unlink")
    with pytest.raises(Killed):
        store.delete(a.uuid)
    assert store.path_of(a.uuid).exists()
    _, _, records, failures = host.boot()
    assert [r.name for r in records] == ["beta"] and failures == []
    assert not store.path_of(a.uuid).exists()


@pytest.mark.parametrize("tail", [b"\x00" * 300, b"\x00\x00\x00"], ids=["zeros", "short"])
def test_torn_journal_tail_is_a_crash_not_tampering(host: Host, tail: bytes) -> None:
    _store, _, _ = first_run(host)
    with (host.folder / JOURNAL_NAME).open("ab") as journal:
        journal.write(tail)
    _, _, records, failures = host.boot()
    assert (len(records), failures) == (2, [])


def test_entry_cut_short_is_a_crash_not_tampering(host: Host) -> None:
    store, a, _ = first_run(host)
    store.save(a.with_state(b"x"))
    journal = host.folder / JOURNAL_NAME
    journal.write_bytes(journal.read_bytes()[:-10])
    _, _, records, failures = host.boot()
    assert (len(records), failures) == (2, [])  # the record is one ahead: repaired


def test_journal_is_compacted_and_survives(host: Host, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rollback, "COMPACT_AFTER_BYTES", 2000)
    store, a, _ = first_run(host)
    for i in range(60):
        store.save(a.with_state(b"%d" % i))
        assert (host.folder / JOURNAL_NAME).stat().st_size <= 2000 + 200
    _, _, records, failures = host.boot()  # killed: the journal replays on top
    assert failures == [] and {r.name: r.state for r in records}["alpha"] == b"59"


def test_concurrent_saves_of_different_vtpms(host: Host) -> None:
    store = host.boot()[0]
    records = [make_record(f"vm{n}", n) for n in range(1, 9)]

    def work(record: Record) -> None:
        for i in range(25):
            store.save(record.with_state(b"%d" % i))

    threads = [threading.Thread(target=work, args=(r,)) for r in records]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close_epoch()
    _, _, loaded, failures = host.boot()
    assert failures == [] and {r.state for r in loaded} == {b"24"}
    assert all(stamp_of(store, r).generation == 25 for r in records)


# -- version 1 records -----------------------------------------------------------------


def encode_v1(record: Record) -> bytes:
    """The version 1 writer, as it was, for compatibility tests."""
    nonce = os.urandom(12)
    header = json.dumps({
        "uuid": record.uuid, "name": record.name, "engine": record.engine,
        "created_unix": record.created_unix, "metadata": record.metadata,
        "running": record.running, "has_state": record.state is not None,
        "wrapped_key": base64.b64encode(KEK.wrap(record.data_key, record.uuid)).decode(),
        "nonce": base64.b64encode(nonce).decode(),
    }, sort_keys=True, separators=(",", ":")).encode()
    prefix = struct.pack(">8sHI", b"VTPMREC\x00", 1, len(header))
    return prefix + header + AESGCM(record.data_key).encrypt(nonce, record.state or b"",
                                                             prefix + header)


def test_version_1_store_is_adopted_once_then_protected(host: Host) -> None:
    a = make_record("legacy", 1)
    host.folder.mkdir(parents=True)
    path = host.folder / f"{a.uuid}.vtpm"
    path.write_bytes(v1 := encode_v1(a))
    assert open_record(v1, KEK, path) == (a, Stamp(0, 0))
    assert StateStore(host.folder, KEK).load_all() == ([a], [])  # unprotected: as before

    with pytest.raises(RollbackDetected, match="written before rollback protection"):
        host.boot()
    store, _report, records, failures = host.boot(adopt=True)
    assert (records, failures) == ([a], [])
    store.save(a.with_state(b"migrated"))
    assert path.read_bytes()[8:10] == b"\x00\x03" and stamp_of(store, a).generation == 1
    store.close_epoch()

    path.write_bytes(v1)  # the version 1 file put back is an older copy now
    _, _, records, failures = host.boot()
    assert records == [] and "older copy" in str(failures[0])


# -- the epoch rule as a table ---------------------------------------------------------


@pytest.mark.parametrize(("epoch", "pending", "closed", "counter", "verdict"), [
    (5, None, False, 5, Verdict.UNCLEAN),             # killed while serving epoch 5
    (5, 6, True, 6, Verdict.CLEAN),                   # stopped cleanly
    (5, 6, True, 5, Verdict.FINISH_CLOSE),            # killed inside the clean stop
    (5, 6, False, 5, Verdict.UNCLEAN),                # killed before the start increment
    (5, 6, False, 6, Verdict.UNCLEAN),                # killed after it: a run may follow
    (5, None, False, 6, Verdict.OLDER_THAN_COUNTER),  # copy taken while running
    (5, 6, True, 7, Verdict.OLDER_THAN_COUNTER),      # copy of an old clean stop
    (5, 6, True, 8, Verdict.OLDER_THAN_COUNTER),
    (5, None, False, 4, Verdict.NEWER_THAN_COUNTER),  # another counter
    (5, 6, False, 4, Verdict.NEWER_THAN_COUNTER),
])
def test_epoch_rule(epoch: int, pending: int | None, closed: bool, counter: int,
                    verdict: Verdict) -> None:
    assert judge(ManifestState(epoch, pending, closed, {"u": Entry("vm", 1)}), counter) \
        is verdict


# -- a kill at any mutating syscall never looks like a rollback ------------------------


@contextlib.contextmanager
def kill_after(steps: int) -> Iterator[None]:
    """SIGKILL stand-in: the ``steps``-th write, rename or unlink does not happen, nor
    anything after it (a process kill keeps every completed syscall)."""
    left = steps
    originals = {name: getattr(os, name) for name in ("write", "replace", "unlink")}

    def wrap(name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            nonlocal left
            left -= 1
            if left == 0:
                raise Killed
            return originals[name](*args, **kwargs)
        return call

    with contextlib.ExitStack() as stack:
        for name in originals:
            stack.enter_context(mock.patch.object(os, name, wrap(name)))
        yield


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.sampled_from(["save", "save", "delete", "restart"]),
                              st.integers(0, 2)), min_size=1, max_size=12),
       kill=st.integers(1, 50))
def test_kill_anywhere_loses_nothing_acknowledged_and_raises_no_alarm(
        tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int]],
        kill: int) -> None:
    host = Host(tmp_path_factory.mktemp("kill"))
    acked: dict[str, bytes] = {}
    inflight: tuple[str, bytes | None] | None = None
    store = host.boot()[0]
    try:
        with kill_after(kill):
            for step, (op, n) in enumerate(ops):
                record = make_record(f"vm{n}", n + 1, state=b"%d" % step)
                if op == "save":
                    inflight = (record.uuid, record.state)
                    store.save(record)
                    acked[record.uuid] = b"%d" % step
                elif op == "delete" and record.uuid in acked:
                    inflight = (record.uuid, None)
                    store.delete(record.uuid)
                    del acked[record.uuid]
                elif op == "restart":
                    inflight = None
                    store.close_epoch()
                    store, _, _, failures = host.boot()
                    assert failures == []
                inflight = None
    except Killed:
        pass
    _, _, records, failures = host.boot()
    assert failures == []
    loaded = {r.uuid: r.state for r in records}
    if inflight is not None:  # the command in flight may or may not have happened
        uuid, state = inflight
        if loaded.get(uuid) == state or (state is None and uuid not in loaded):
            acked.pop(uuid, None)
            if state is not None:
                acked[uuid] = state
    assert loaded == acked
