"""Static partitioning (`--seed-start S --seed-stride K`, no bucket) and the fleet tally: the
progress core steps by the stride on real seeds; a real daemon runs exactly its own sequence."""

from __future__ import annotations

import itertools
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.test_daemon_e2e import FLAKY, checkpoint, env_with, events, failure_files, run
from voprd.core.progress import RunProgress
from voprd.core.records import JournalRecord, RunFingerprint, read_failure
from voprd.fleet.core import static_partition_seed


def fingerprint(first_seed: int, stride: int) -> RunFingerprint:
    return RunFingerprint(first_seed=first_seed, target="t", exec_cmd=None, faults=(),
                          max_events=1, bugs=(), check_determinism=False, voprd_version="0",
                          seed_stride=stride)


@given(st.integers(0, 50), st.integers(1, 9), st.integers(1, 40), st.randoms())
def test_strided_progress_dispatches_and_completes_exactly_its_sequence(
    first: int, stride: int, count: int, rnd: object
) -> None:
    end = first + count * stride
    progress = RunProgress(run_id="r", fingerprint=fingerprint(first, stride), end_seed=end)
    sequence = [static_partition_seed(first, stride, k) for k in range(count)]
    dispatched = progress.dispatch(count + 5)
    assert dispatched == sequence and progress.dispatch_exhausted
    shuffled = list(dispatched)
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    for seed in shuffled:
        assert progress.record(JournalRecord(seed=seed, failed=seed % 3 == 0))
        assert not progress.record(JournalRecord(seed=seed, failed=False))
    assert progress.finished and progress.watermark == end
    assert progress.total_iterations == count
    assert progress.checkpoint("t", []).done_above == []


def test_stride_is_part_of_the_run_fingerprint() -> None:
    assert fingerprint(3, 4).differences(fingerprint(3, 1)) == ["seed_stride: 4 -> 1"]


def test_fleet_tally_floor_keeps_the_done_set_bounded() -> None:
    progress = RunProgress(run_id="r", fingerprint=fingerprint(100, 1), end_seed=None)
    for seed in itertools.chain(range(120, 130), range(150, 155)):  # two batches of ours
        progress.record(JournalRecord(seed=seed, failed=False))
    assert progress.watermark == 100 and len(progress.done_above) == 15
    progress.advance_floor(140)  # the fleet finished everything below 140
    assert progress.watermark == 140 and sorted(progress.done_above) == list(range(150, 155))
    progress.advance_floor(150)  # the floor meets our own seeds: they fold into the watermark
    assert progress.watermark == 155 and not progress.done_above
    progress.advance_floor(10)  # never backwards
    assert progress.watermark == 155


def test_daemon_runs_its_static_partition_with_real_seeds(tmp_path: Path) -> None:
    state, log = tmp_path / "state", tmp_path / "runs.log"
    env = env_with(VOPRD_TEST_RUN_LOG=str(log))
    args = ["--target", FLAKY, "--workers", "2", "--seed-start", "3", "--seed-stride", "4",
            "-n", "12", "--json"]
    done = run(state, *args, env=env)
    assert done.returncode == 1, done.stderr.decode()[-2000:]  # Flaky fails seed % 7 == 6
    ours = [3 + 4 * k for k in range(12)]
    assert sorted(int(line) for line in log.read_text().split()) == ours
    cp = checkpoint(state)
    assert cp.fingerprint.seed_stride == 4 and cp.watermark == 3 + 4 * 12
    assert cp.total_iterations == 12 and cp.last_seed == ours[-1]
    failing = [s for s in ours if s % 7 == 6]
    assert sorted(cp.failed_seeds) == failing
    archived = [read_failure(path.read_bytes()) for path in failure_files(state)]
    assert sorted(f.seed for f in archived) == failing
    assert all(f.reproduce.startswith(f"voprd --once --seed {f.seed} ") for f in archived)
    iterations = [data for kind, data in events(done.stdout) if kind == "iteration"]
    assert sorted(int(str(d["seed"])) for d in iterations) == ours
    # Another stride is another seed space: refused, naming the difference.
    refused = run(state, *[a if a != "4" else "5" for a in args], env=env)
    assert refused.returncode == 2 and "seed_stride: 4 -> 5" in refused.stderr.decode()
