"""The daemon's pure cores driven directly: progress, records, failures/alerts, metrics."""

from __future__ import annotations

import itertools
import pathlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voprd.core.failures import (
    AlertPolicy,
    FailureInfo,
    alert_for,
    crash_frames,
    fingerprint,
    normalise_message,
)
from voprd.core.metrics import MetricsAggregator
from voprd.core.progress import RunProgress, resume_decision
from voprd.core.records import (
    FAILED_SEEDS_KEPT_MAX,
    JOURNAL_FORMAT,
    CheckpointInvalid,
    JournalHeader,
    JournalRecord,
    RunFingerprint,
    read_checkpoint,
    read_journal,
    write_checkpoint,
    write_journal_header,
    write_journal_record,
)
from voprd.service.supervisor import BACKOFF_MAX_S, restart_backoff_s


def fp(first_seed: int = 0, **changes: object) -> RunFingerprint:
    fields: dict[str, object] = dict(
        first_seed=first_seed, target="builtin", exec_cmd=None, faults=("network",),
        max_events=1000, bugs=(), check_determinism=False, voprd_version="0.1.0",
    )
    fields.update(changes)
    return RunFingerprint(**fields)  # type: ignore[arg-type]


def progress(first_seed: int = 0, end_seed: int | None = None) -> RunProgress:
    return RunProgress(run_id="r", fingerprint=fp(first_seed), end_seed=end_seed)


# --- progress --------------------------------------------------------------------------------


def test_watermark_advances_over_out_of_order_completions() -> None:
    run = progress(10)
    assert run.dispatch(5) == [10, 11, 12, 13, 14]
    for seed in (12, 14, 11):
        assert run.record(JournalRecord(seed=seed, failed=False))
    assert run.watermark == 10 and run.done_above == {11, 12, 14}
    assert run.record(JournalRecord(seed=10, failed=True))
    assert run.watermark == 13 and run.done_above == {14}
    assert run.total_iterations == 4 and run.total_failures == 1 and run.last_seed == 14


def test_recording_a_done_seed_twice_changes_nothing() -> None:
    run = progress()
    run.dispatch(3)
    assert run.record(JournalRecord(seed=1, failed=True))
    assert not run.record(JournalRecord(seed=1, failed=True))
    assert run.total_iterations == 1 and run.total_failures == 1 and run.failed_seeds == [1]


def test_dispatch_skips_done_seeds_after_resume_and_requeues_first() -> None:
    run = progress()
    run.dispatch(6)
    for seed in (0, 1, 3, 5):
        run.record(JournalRecord(seed=seed, failed=False))
    resumed = RunProgress.from_checkpoint(run.checkpoint("t", []), end_seed=None)
    assert resumed.dispatch(3) == [2, 4, 6]
    resumed.requeue([4])
    assert resumed.dispatch(2) == [4, 7]


def test_bounded_run_finishes_and_exhausts() -> None:
    run = progress(5, end_seed=8)
    assert run.dispatch(10) == [5, 6, 7]
    assert run.dispatch_exhausted and not run.finished
    run.requeue([6])
    assert not run.dispatch_exhausted
    assert run.dispatch(10) == [6]
    for seed in (5, 6, 7):
        run.record(JournalRecord(seed=seed, failed=False))
    assert run.finished and run.dispatch(1) == []


def test_failed_seeds_are_bounded_most_recent() -> None:
    run = progress()
    count = FAILED_SEEDS_KEPT_MAX + 30
    run.dispatch(count)
    for seed in range(count):
        run.record(JournalRecord(seed=seed, failed=True))
    assert run.failed_seeds == list(range(30, count))
    assert run.total_failures == count


@settings(max_examples=300, deadline=None)
@given(
    first=st.integers(0, 1000),
    order=st.permutations(list(range(40))),
    cut=st.integers(0, 40),
    failing=st.sets(st.integers(0, 39)),
)
def test_checkpoint_round_trip_resumes_exactly(
    first: int, order: list[int], cut: int, failing: set[int]
) -> None:
    """Any completion order, checkpoint at any point, resume: done set is exact, nothing twice."""
    run = progress(first, end_seed=first + 40)
    run.dispatch(40)
    for offset in order[:cut]:
        run.record(JournalRecord(seed=first + offset, failed=offset in failing))
    restored = RunProgress.from_checkpoint(
        read_checkpoint(write_checkpoint(run.checkpoint("t", []))), end_seed=first + 40
    )
    done_before = {first + offset for offset in order[:cut]}
    assert {s for s in range(first, first + 40) if restored.is_done(s)} == done_before
    remaining = restored.dispatch(100)
    assert sorted(remaining) == sorted(set(range(first, first + 40)) - done_before)
    for seed in remaining:
        restored.record(JournalRecord(seed=seed, failed=seed - first in failing))
    assert restored.finished and restored.total_iterations == 40
    assert restored.total_failures == len(failing)


def journal_bytes(run_id: str, records: list[JournalRecord]) -> bytes:
    header = JournalHeader(run_id=run_id, fingerprint=fp(), format=JOURNAL_FORMAT)
    return write_journal_header(header) + b"".join(
        write_journal_record(record, run_id) for record in records)


def failed_record(seed: int) -> JournalRecord:
    return JournalRecord(seed=seed, failed=True, fingerprint=f"fp{seed % 3}",
                         invariant="agreement")


@settings(max_examples=200, deadline=None)
@given(records=st.lists(st.tuples(st.integers(0, 50), st.booleans()), max_size=80),
       torn=st.integers(0, 30))
def test_journal_replay_is_idempotent_and_tolerates_a_torn_tail(
    records: list[tuple[int, bool]], torn: int
) -> None:
    written = [failed_record(s) if f else JournalRecord(seed=s, failed=False) for s, f in records]
    data = journal_bytes("r", written)
    full = read_journal(data)
    assert full.header is not None and full.header.run_id == "r" and full.records == written
    assert full.problem is None and full.untrusted == 0
    torn_data = data[: max(len(data) - torn, 0)]
    partial = read_journal(torn_data)
    assert partial.records == full.records[: len(partial.records)]  # never invents any
    assert partial.problem is None, "a torn last line is a crash mid-write, not a lie"
    if partial.header is not None:
        assert len(partial.records) == torn_data.count(b"\n") - 1  # every complete line
    once, twice = progress(), progress()
    once.dispatch(60)
    twice.dispatch(60)
    for record in partial.records:
        once.record(record)
    for record in partial.records + partial.records:
        twice.record(record)
    assert once.checkpoint("t", []) == twice.checkpoint("t", [])


@settings(max_examples=200, deadline=None)
@given(records=st.lists(st.tuples(st.integers(0, 50), st.booleans()), min_size=1, max_size=40),
       data=st.data())
def test_an_edited_journal_line_proves_nothing_from_there_on(
    records: list[tuple[int, bool]], data: st.DataObject
) -> None:
    """Any change to a complete record line (another well-formed record, a flipped byte) stops
    the read there: the records before it stand, it and those after it are untrusted."""
    written = [failed_record(s) if f else JournalRecord(seed=s, failed=False) for s, f in records]
    lines = journal_bytes("r", written).split(b"\n")
    index = data.draw(st.integers(1, len(written)), label="line")
    check, _, body = lines[index].partition(b" ")
    other = data.draw(st.sampled_from(["other_record", "flip_byte", "other_run"]))
    if other == "other_record":  # well-formed, for another seed or outcome, same checksum
        seed, failed = written[index - 1].seed, written[index - 1].failed
        body = msgspec.json.encode(JournalRecord(seed=seed + 1, failed=not failed,
                                                 fingerprint=None if failed else "x",
                                                 invariant=None if failed else "x"))
    elif other == "flip_byte":
        position = data.draw(st.integers(0, len(lines[index]) - 1))
        flipped = bytearray(lines[index])
        flipped[position] ^= 1 << data.draw(st.integers(0, 6))
        check, _, body = bytes(flipped).partition(b" ")
    else:  # a line copied from another run's journal
        check, _, body = write_journal_record(written[index - 1], "another-run").partition(b" ")
        body = body.rstrip(b"\n")
    lines[index] = check + b" " + body
    contents = read_journal(b"\n".join(lines))
    if lines[index] == journal_bytes("r", written).split(b"\n")[index]:
        return  # the flip hit nothing that changes the line (impossible for a xor, kept honest)
    assert contents.records == written[: index - 1]
    assert contents.untrusted == len(written) - (index - 1) and contents.problem is not None


def test_an_older_journal_without_checksums_proves_nothing() -> None:
    header = msgspec.json.encode({"type": "header", "run_id": "r",
                                  "fingerprint": msgspec.to_builtins(fp())})
    data = header + b"\n[5,false,null,null]\n[6,true,\"f\",\"agreement\"]\n"
    contents = read_journal(data)
    assert contents.header is not None and contents.header.format == 1
    assert contents.records == [] and contents.untrusted == 2
    assert contents.problem is not None and "format 1" in contents.problem


def test_journal_records_are_range_checked_against_the_run() -> None:
    run = RunProgress(run_id="r", fingerprint=fp(10, seed_stride=3), end_seed=40)
    assert run.record_problem(JournalRecord(seed=13, failed=False)) is None
    assert run.record_problem(failed_record(16)) is None
    for bad in (JournalRecord(seed=11, failed=False),  # off the sequence
                JournalRecord(seed=7, failed=False),  # below the first seed
                JournalRecord(seed=40, failed=False),  # at the end
                JournalRecord(seed=2**64 + 10, failed=False),  # past the seed space
                JournalRecord(seed=13, failed=True),  # a failure without its fingerprint
                JournalRecord(seed=13, failed=False, fingerprint="f", invariant="i"),
                JournalRecord(seed=13, failed=False, events=-1),
                JournalRecord(seed=13, failed=False, minute_unix=61),
                JournalRecord(seed=13, failed=False, duration_s=float("nan"))):
        assert run.record_problem(bad) is not None, bad
    unbounded = RunProgress(run_id="r", fingerprint=fp(2**64 - 2), end_seed=None)
    assert unbounded.record_problem(JournalRecord(seed=2**64 - 1, failed=False)) is None
    assert unbounded.record_problem(JournalRecord(seed=2**64, failed=False)) is not None
    assert unbounded.dispatch(5) == [2**64 - 2, 2**64 - 1] and unbounded.dispatch_exhausted


def test_checkpoint_reader_rejects_invariant_violations() -> None:
    run = progress()
    run.dispatch(3)
    run.record(JournalRecord(seed=2, failed=False))
    good = write_checkpoint(run.checkpoint("t", []))
    assert read_checkpoint(good).done_above == [2]
    with pytest.raises(CheckpointInvalid):
        read_checkpoint(good.replace(b'"total_iterations":1', b'"total_iterations":7'))
    with pytest.raises(CheckpointInvalid):
        read_checkpoint(good[: len(good) // 2])
    with pytest.raises(CheckpointInvalid):
        read_checkpoint(good.replace(b'"done_above":[2]', b'"done_above":[0]'))


def test_resume_decision_names_differences() -> None:
    assert resume_decision(None, fp(), reset=False) == ("new", [])
    assert resume_decision(fp(), fp(), reset=False) == ("resume", [])
    assert resume_decision(fp(), fp(max_events=5), reset=True) == ("reset", [])
    decision, differences = resume_decision(fp(), fp(max_events=5, target="x"), reset=False)
    assert decision == "refuse"
    assert differences == ["target: 'builtin' -> 'x'", "max_events: 1000 -> 5"]


# --- failures and alerts ---------------------------------------------------------------------


def test_normalise_message_removes_numbers_and_ids() -> None:
    a = normalise_message("replica 3 op 1042 at 0x7f3a2b id 3f2a1c4e-0b1d-4c2e-9a7f-1234567890ab")
    b = normalise_message("replica 1 op 77 at 0x10 id 00000000-0000-0000-0000-000000000000")
    assert a == b == "replica <n> op <n> at <addr> id <id>"
    assert normalise_message("hash deadbeef12 differs") == "hash <hex> differs"


def test_fingerprint_groups_same_bug_and_separates_different_ones() -> None:
    one = fingerprint("invariant", "agreement", "op 5 differs on replica 1", [])
    two = fingerprint("invariant", "agreement", "op 9 differs on replica 2", [])
    other = fingerprint("invariant", "durability", "op 5 differs on replica 1", [])
    assert one == two != other
    assert fingerprint("timeout", None, "x", []) != fingerprint("oom", None, "x", [])


def test_crash_fingerprint_uses_type_and_innermost_frames_of_our_code() -> None:
    trace = [
        'Traceback (most recent call last):',
        '  File "/srv/voprd/service/worker.py", line 40, in run_one',
        '  File "/srv/voprd/vsr/replica.py", line 100, in on_prepare',
        '  File "/usr/lib/python3.11/collections/__init__.py", line 10, in __getitem__',
    ]
    assert crash_frames(trace) == ["worker.py:run_one", "replica.py:on_prepare"]
    moved = [line.replace("line 100", "line 130") for line in trace]
    assert fingerprint("crash", None, "KeyError: 5", trace) == fingerprint(
        "crash", None, "KeyError: 'other key'", moved
    )
    elsewhere = [line.replace("on_prepare", "on_commit") for line in trace]
    assert fingerprint("crash", None, "KeyError: 5", trace) != fingerprint(
        "crash", None, "KeyError: 5", elsewhere
    )


def info(seed: int, batch_start: int = 42000) -> FailureInfo:
    return FailureInfo(
        seed=seed, batch_start=batch_start, kind="invariant", invariant="linearizability",
        message="Final history is not linearizable",
        reproduce=f"voprd --once --seed {seed} -v", archive=f"/s/failures/seed-{seed}-1.json",
    )


def test_alert_text_is_exactly_the_issue_format() -> None:
    alert = alert_for([info(42042)], "host-1", "2026-11-27T06:00:00.000Z")
    assert alert.text == (
        "Subject: VOPR: 1 Invariant Violation(s) Detected\n"
        "VOPR detected 1 invariant violation(s) in batch starting at seed 42000.\n"
        "\n"
        "Seed: 42042\n"
        "Invariant: linearizability\n"
        "Message: Final history is not linearizable\n"
        "Reproduce: voprd --once --seed 42042 -v\n"
        "---\n"
        "Instance: host-1\n"
        "Timestamp: 2026-11-27T06:00:00.000Z\n"
        "Archive: /s/failures/seed-42042-1.json\n"
    )


def test_alert_names_each_failure_report_after_its_archive() -> None:
    with_report = msgspec.structs.replace(info(7), report="/s/failures/seed-7-1.html")
    alert = alert_for([with_report, info(8)], "host-1", "2026-11-27T06:00:00.000Z")
    assert alert.text.endswith(
        "Archive: /s/failures/seed-7-1.json\n"
        "Report: /s/failures/seed-7-1.html\n"
        "Archive: /s/failures/seed-8-1.json\n"
    )
    assert alert.text.count("Report:") == 1


def test_alert_policy_alerts_first_occurrence_and_counts_repeats() -> None:
    policy = AlertPolicy(cooldown_s=100)
    assert policy.observe("fpA", info(1), now_s=0)
    assert not policy.observe("fpA", info(2), now_s=1)
    assert not policy.observe("fpA", info(3), now_s=2)
    assert policy.pending == 2
    assert policy.observe("fpB", info(4), now_s=3)
    repeats = policy.take_repeats()
    assert [(r.fingerprint, r.suppressed_count, r.suppressed_seeds) for r in repeats] == [
        ("fpA", 2, [2, 3])
    ]
    text = alert_for([info(4)], "h", "t", repeats).message
    assert "linearizability (fingerprint fpA, first seed 1): 2 repeat(s), seeds 2, 3" in text
    assert policy.pending == 0


def test_digest_is_sent_at_most_once_per_cooldown() -> None:
    policy = AlertPolicy(cooldown_s=100)
    policy.observe("fpA", info(1), now_s=0)
    for seed in range(2, 30):
        policy.observe("fpA", info(seed), now_s=seed)
    assert policy.digest(30, "h", "t") is None  # starts the digest clock
    assert policy.digest(129, "h", "t") is None
    digest = policy.digest(130, "h", "t")
    assert digest is not None and digest.subject == "VOPR: Digest of 28 Repeated Failure(s)"
    assert "seeds 2, 3, 4, 5, 6, 7, 8, 9, 10, 11 and 18 more" in digest.message
    assert policy.digest(131, "h", "t") is None and policy.pending == 0


def test_alert_state_survives_restart() -> None:
    policy = AlertPolicy(cooldown_s=100)
    policy.observe("fpA", info(1), now_s=0)
    restored = AlertPolicy(policy.states(), cooldown_s=100)
    assert not restored.observe("fpA", info(9), now_s=5)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 10_000)), max_size=60))
def test_alert_policy_alerts_each_fingerprint_exactly_once(events: list[tuple[str, int]]) -> None:
    policy = AlertPolicy(cooldown_s=10)
    alerted = [key for index, (key, seed) in enumerate(events)
               if policy.observe(key, info(seed), now_s=index)]
    assert sorted(alerted) == sorted({key for key, _ in events})
    assert policy.pending == len(events) - len(alerted)


# --- metrics ---------------------------------------------------------------------------------


def test_metrics_aggregate_per_closed_minute() -> None:
    metrics = MetricsAggregator()
    metrics.add(60.5, failed=False, events=10, duration_s=0.5)
    metrics.add(119.0, failed=True, events=5, duration_s=1.5)
    metrics.add(120.0, failed=False, events=1, duration_s=0.25)
    assert metrics.take_closed(119.9) == []
    (closed,) = metrics.take_closed(120.1)
    assert closed.minute_start_unix == 60
    assert (closed.iterations_completed, closed.failures_detected, closed.events_simulated) == (
        2, 1, 15)
    stats = closed.seed_duration_s
    assert (stats.sample_count, stats.sum, stats.minimum, stats.maximum) == (2, 2.0, 0.5, 1.5)
    (last,) = metrics.take_all()
    assert last.minute_start_unix == 120 and last.iterations_completed == 1


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1000), st.booleans(), st.integers(0, 100)), max_size=50))
def test_metrics_lose_and_duplicate_nothing(samples: list[tuple[float, bool, int]]) -> None:
    metrics = MetricsAggregator()
    taken = []
    for now, failed, events in sorted(samples):
        metrics.add(now, failed=failed, events=events, duration_s=0.1)
        taken += metrics.take_closed(now)
    taken += metrics.take_all()
    assert sum(a.iterations_completed for a in taken) == len(samples)
    assert sum(a.failures_detected for a in taken) == sum(f for _, f, _ in samples)
    assert sum(a.events_simulated for a in taken) == sum(e for _, _, e in samples)


def test_restart_backoff_grows_and_is_bounded() -> None:
    delays = [restart_backoff_s(n) for n in range(0, 30)]
    assert delays[0] == 0.0 and delays[1] > 0
    assert all(b >= a for a, b in itertools.pairwise(delays))
    assert max(delays) == BACKOFF_MAX_S


def test_board_never_returns_a_torn_seed_and_time(tmp_path: pathlib.Path) -> None:
    """A read that sees a new seed beside the old time (a store in progress) is not used; seeds
    are unsigned 64-bit."""
    import struct

    from voprd.service.protocol import Board

    path = tmp_path / "board"
    path.write_bytes(b"")
    board = Board(str(path))
    board.reset()
    assert (board.read().seed, board.read().heartbeat_s) == (None, 0.0)
    board.post(2**64 - 1, 123.5)
    board.beat(200.0)
    view = board.read()
    assert (view.seed, view.started_s, view.heartbeat_s) == (2**64 - 1, 123.5, 200.0)
    board.post(None, 130.0)
    assert board.read().seed is None and board.read().heartbeat_s == 200.0
    board.post(42, 140.0)
    board._map[0:8] = struct.pack("<Q", 7)  # the worker has stored the seed, not yet the time
    torn = board.read()
    assert torn.started_s > 140.0, "a torn read must not date the seed from the old time"
    assert torn.heartbeat_s > 200.0, "nor call the worker silent"
    board.close()
