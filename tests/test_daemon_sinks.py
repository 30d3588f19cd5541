"""The local backend's files, the progress journal, the target loader and sd_notify, in-process."""

from __future__ import annotations

import asyncio
import os
import socket
from pathlib import Path

import pytest

from voprd.config import Settings
from voprd.core.progress import RunProgress
from voprd.core.records import (
    JOURNAL_FORMAT,
    FailureRecord,
    JournalHeader,
    JournalRecord,
    RunFingerprint,
)
from voprd.service.notify import Notifier
from voprd.sinks.factory import make_backend, resolve_state_dir
from voprd.sinks.local import LocalBackend, LocalFailureArchive, ProgressJournal
from voprd.targets.exec import contiguous_runs
from voprd.targets.loader import TargetNotFound, load_target

FP = RunFingerprint(first_seed=0, target="t", exec_cmd=None, faults=(), max_events=10, bugs=(),
                    check_determinism=False, voprd_version="0")


def checkpoint_after(seeds: list[int]):  # type: ignore[no-untyped-def]
    run = RunProgress(run_id="r", fingerprint=FP, end_seed=None)
    run.dispatch(max(seeds) + 1)
    for seed in seeds:
        run.record(JournalRecord(seed=seed, failed=False))
    return run.checkpoint("2026-01-01T00:00:00Z", [])


async def test_checkpoint_store_keeps_previous_copy_and_sets_corrupt_ones_aside(
    tmp_path: Path,
) -> None:
    store = LocalBackend(tmp_path).checkpoints
    assert (await store.load()).checkpoint is None
    await store.save(checkpoint_after([0, 1]))
    await store.save(checkpoint_after([0, 1, 2, 5]))
    loaded = await store.load()
    assert loaded.checkpoint is not None and loaded.checkpoint.watermark == 3
    assert loaded.problems == [] and loaded.source.endswith("checkpoint.json")
    (tmp_path / "checkpoint.json").write_bytes(b"\x00garbage")
    fallback = await store.load()
    assert fallback.checkpoint is not None and fallback.checkpoint.watermark == 2
    assert fallback.source.endswith("checkpoint.json.prev")
    assert "kept aside" in fallback.problems[0]
    assert [p.read_bytes() for p in tmp_path.glob("checkpoint.json.corrupt-*")] == [b"\x00garbage"]
    await store.discard()
    assert (await store.load()).checkpoint is None
    assert len(list(tmp_path.glob("checkpoint.json*.reset-*"))) == 1


def record(seed: int, run_id: str = "r", unix_ts: int = 1000) -> FailureRecord:
    return FailureRecord(
        run_id=run_id, seed=seed, kind="invariant", invariant="agreement", message="m",
        reproduce=f"voprd --once --seed {seed} -v", fingerprint="f", configuration={},
        voprd_version="0", git_commit=None, python_version="3.11", detected_at="t",
        unix_ts=unix_ts, history=[], trace_tail=[],
    )


async def test_failure_archive_is_idempotent_per_run_and_seed(tmp_path: Path) -> None:
    (tmp_path / "failures").mkdir()
    archive = LocalFailureArchive(tmp_path / "failures")
    first = await archive.put(record(7))
    assert first.endswith("failures/seed-7-1000.json")
    assert await archive.put(record(7, unix_ts=2000)) == first  # a re-run after a crash
    # A fresh process (new index) still finds it; another run gets its own record.
    again = LocalFailureArchive(tmp_path / "failures")
    assert await again.put(record(7, unix_ts=3000)) == first
    other = await again.put(record(7, run_id="other", unix_ts=3000))
    assert other != first
    assert len(list((tmp_path / "failures").glob("*.json"))) == 2


async def test_concurrent_puts_after_a_restart_create_no_duplicate(tmp_path: Path) -> None:
    (tmp_path / "failures").mkdir()
    await LocalFailureArchive(tmp_path / "failures").put(record(3))
    fresh = LocalFailureArchive(tmp_path / "failures")  # a restarted daemon: index not built yet
    locations = await asyncio.gather(*(fresh.put(record(seed, unix_ts=5000 + seed))
                                       for seed in [3, 4, 3, 4, 5, 3] * 3))
    assert len(set(locations)) == 3
    assert len(list((tmp_path / "failures").glob("*.json"))) == 3


def test_progress_journal_group_commit_and_restart(tmp_path: Path) -> None:
    path = tmp_path / "checkpoint.json.journal"
    journal = ProgressJournal(path)
    journal.restart(JournalHeader(run_id="r", fingerprint=FP, format=JOURNAL_FORMAT))
    for seed in (3, 1, 2):
        journal.append(JournalRecord(seed=seed, failed=seed == 2,
                                     fingerprint="f" if seed == 2 else None))
    assert ProgressJournal.read(path).records == []  # buffered, not yet durable
    journal.write_durably(journal.take_pending())
    contents = ProgressJournal.read(path)
    assert contents.header is not None and contents.header.run_id == "r"
    assert contents.problem is None and contents.untrusted == 0
    assert [(r.seed, r.failed) for r in contents.records] == [(3, False), (1, False), (2, True)]
    journal.restart(JournalHeader(run_id="r", fingerprint=FP, format=JOURNAL_FORMAT))
    assert ProgressJournal.read(path).records == []
    journal.close()


def test_state_dir_defaults() -> None:
    assert resolve_state_dir(Settings(state_dir="/x/y")) == Path("/x/y")
    assert resolve_state_dir(Settings(), {"STATE_DIRECTORY": "/var/lib/voprd:/other"}) == Path(
        "/var/lib/voprd")
    assert resolve_state_dir(Settings(), {"XDG_STATE_HOME": "/s"}) == Path("/s/voprd")
    assert resolve_state_dir(Settings(), {"HOME": "/home/u"}) == Path("/home/u/.local/state/voprd")


def test_factory_picks_local_without_a_bucket(tmp_path: Path) -> None:
    backend = make_backend(Settings(), tmp_path, "host")
    assert backend.name == "local" and backend.health().healthy


def test_loader_resolves_paths_and_explains_failures() -> None:
    target = load_target("tests.targets_for_tests:Flaky")
    assert target.name == "flaky"
    with pytest.raises(TargetNotFound, match="no attribute"):
        load_target("tests.targets_for_tests:Nope")
    with pytest.raises(TargetNotFound, match="cannot import"):
        load_target("no_such_module_xyz:T")
    with pytest.raises(TargetNotFound, match="unknown target 'nothing'"):
        load_target("nothing")
    assert load_target("exec", "true").name == "exec"


def test_loader_finds_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "voprd_plugin_example-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: voprd-plugin-example\n"
                                   "Version: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[voprd.targets]\nexample = tests.targets_for_tests:Flaky\n"
        "broken = tests.targets_for_tests:Missing\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert load_target("example").name == "flaky"
    with pytest.raises(TargetNotFound, match="does not load"):
        load_target("broken")


def test_contiguous_runs() -> None:
    assert contiguous_runs([5, 1, 2, 3, 9, 10]) == [(1, 3), (5, 1), (9, 2)]
    assert contiguous_runs([]) == []


def test_notifier_sends_datagrams_and_reads_the_watchdog(tmp_path: Path) -> None:
    path = str(tmp_path / "n.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000",
                             "WATCHDOG_PID": str(os.getpid())})
        assert notifier.enabled and notifier.watchdog_interval_s == 1.5
        assert notifier.send(ready="1", status="up")
        assert sock.recv(100) == b"READY=1\nSTATUS=up\n"
        notifier.close()
    other_pid = Notifier({"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"})
    assert other_pid.watchdog_interval_s is None
    assert not Notifier({}).enabled and not Notifier({}).send(ready="1")


def test_status_cli_without_a_daemon_says_so(tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from voprd.service.status_cli import main

    assert main(["--state-dir", str(tmp_path)]) == 1
    assert f"no daemon is running on {tmp_path}" in capsys.readouterr().out
