"""Three OS processes share one seed space through one moto bucket over real HTTP.

Every batch is recorded done exactly once; a process SIGKILLed mid-batch has its batch taken over
after the lease expires and completed; no two live holders held a batch at the same time (from
the holders' lease events, all on this machine's clock); failures are archived once.

The process command is one function (`worker_command`): the lead re-points it at real daemons.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import boto3
import msgspec

from tests.fleet_moto import moto_bucket
from voprd.fleet.core import decode_done, done_prefix, leases_prefix

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "voprd-fleet"
RUN = "three"
SEEDS = 180
BATCH = 10
FAIL_EVERY = 7
LEASE_S = 3.0
WAIT_S_MAX = 90.0


def worker_command(holder: str, log_dir: Path) -> list[str]:
    return [
        sys.executable, "-m", "voprd.fleet.demo_worker", "--bucket", BUCKET, "--run", RUN,
        "--holder", holder, "--seed", "1000", "-n", str(SEEDS), "--batch-size", str(BATCH),
        "--lease-seconds", str(LEASE_S), "--seed-ms", "250", "--fail-every", str(FAIL_EVERY),
        "--log-dir", str(log_dir),
    ]


def _events(log_dir: Path, holder: str) -> list[dict[str, Any]]:
    path = log_dir / f"events-{holder}.jsonl"
    if not path.exists():
        return []
    return [msgspec.json.decode(line) for line in path.read_text().splitlines() if line]


def _wait_for(predicate: Any, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _hold_intervals(events: list[dict[str, Any]]) -> list[tuple[int, str, float, float]]:
    """(batch, holder, start, end) per claim: from the claim's reply to the moment the holder
    stopped using it, or, if it never said (killed), the end of its last valid lease period."""
    intervals = []
    current: dict[int, list[Any]] = {}
    for e in events:
        batch = e.get("batch")
        if e["event"] == "fleet_claimed":
            current[batch] = [e["wall"], e["valid_until_wall"], None]
        elif e["event"] == "fleet_renewed" and batch in current:
            current[batch][1] = e["valid_until_wall"]
        elif e["event"] in ("fleet_stopped", "fleet_lost") and batch in current:
            start, valid_until, _ = current.pop(batch)
            intervals.append((batch, e["holder"], start, min(valid_until, e["wall"])))
    for batch, (start, valid_until, _) in current.items():
        intervals.append((batch, events[0]["holder"], start, valid_until))
    return intervals


def test_three_processes_share_the_run_and_survive_a_sigkill(tmp_path: Path) -> None:
    holders = ["alpha", "bravo", "charlie"]
    with moto_bucket(BUCKET) as aws_env:
        env = dict(os.environ, **aws_env)
        procs = {
            h: subprocess.Popen(worker_command(h, tmp_path), cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for h in holders
        }
        try:
            # Kill charlie in the middle of its second batch (after one renewal of it).
            def charlie_mid_batch() -> bool:
                ev = _events(tmp_path, "charlie")
                claims = [e for e in ev if e["event"] == "fleet_claimed"]
                return len(claims) >= 2 and any(
                    e["event"] == "fleet_renewed" and e["batch"] == claims[-1]["batch"]
                    for e in ev)

            _wait_for(charlie_mid_batch, 60)
            procs["charlie"].send_signal(signal.SIGKILL)
            procs["charlie"].wait(10)
            for h in ("alpha", "bravo"):
                _, stderr = procs[h].communicate(timeout=WAIT_S_MAX)
                assert procs[h].returncode == 0, stderr.decode()[-3000:]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        s3 = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
        done_objects = s3.list_objects_v2(Bucket=BUCKET, Prefix=done_prefix(RUN))["Contents"]
        done = [decode_done(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
                for o in done_objects]
        leftover = s3.list_objects_v2(Bucket=BUCKET, Prefix=leases_prefix(RUN)).get("Contents", [])
        failures = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"failures/{RUN}/")["Contents"]

    batch_count = SEEDS // BATCH
    # Every batch in the range recorded done exactly once, with the right seeds and counts.
    assert sorted(d.batch for d in done) == list(range(batch_count))
    for d in done:
        assert (d.seed_first, d.seed_end) == (1000 + d.batch * BATCH, 1000 + (d.batch + 1) * BATCH)
        expected_failed = [s for s in range(d.seed_first, d.seed_end) if s % FAIL_EVERY == 0]
        assert d.failed_seeds == expected_failed and d.successes == BATCH - len(expected_failed)
    assert leftover == []  # every lease released

    events = {h: _events(tmp_path, h) for h in holders}
    recorded = [e for ev in events.values() for e in ev if e["event"] == "fleet_done"]
    assert sorted(e["batch"] for e in recorded if e["outcome"] == "recorded") == list(
        range(batch_count))
    assert not [e for e in recorded if e["outcome"] != "recorded"]  # no live duplicate work

    # The done record's holder really ran each of the batch's seeds.
    ran: dict[str, set[int]] = {}
    for h in holders:
        lines = (tmp_path / f"seeds-{h}.log").read_text().splitlines()
        ran[h] = {int(line.split()[0]) for line in lines}
    for d in done:
        assert set(range(d.seed_first, d.seed_end)) <= ran[d.holder]

    # Charlie's batch in flight was taken over after expiry and completed by a survivor.
    charlie_claims = [e["batch"] for e in events["charlie"] if e["event"] == "fleet_claimed"]
    charlie_ended = {e["batch"] for e in events["charlie"]
                     if e["event"] in ("fleet_stopped", "fleet_lost")}
    in_flight = [b for b in charlie_claims if b not in charlie_ended]
    assert len(in_flight) == 1, in_flight
    orphan = in_flight[0]
    charlie_lost = {e["batch"] for e in events["charlie"] if e["event"] == "fleet_lost"}
    takeovers = [e for h in ("alpha", "bravo") for e in events[h]
                 if e["event"] == "fleet_claimed" and e["takeover_of"] == "charlie"
                 and e["batch"] not in charlie_lost]
    assert [e["batch"] for e in takeovers] == [orphan]
    assert next(d for d in done if d.batch == orphan).holder in ("alpha", "bravo")
    charlie_valid_until = max(e["valid_until_wall"] for e in events["charlie"]
                              if e.get("batch") == orphan and "valid_until_wall" in e)
    assert takeovers[0]["wall"] > charlie_valid_until  # taken only after charlie's lease ran out

    # No two live holders held the same batch at the same moment.
    by_batch: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    for h in holders:
        for batch, holder, start, end in _hold_intervals(events[h]):
            by_batch[batch].append((holder, start, end))
    for batch, spans in by_batch.items():
        spans.sort(key=lambda span: span[1])
        for (h1, _, end1), (h2, start2, _) in itertools.pairwise(spans):
            assert end1 <= start2, (batch, h1, h2, end1, start2)
    # A batch had a second holder only after the first was killed or (on a machine so loaded
    # that a 3 s lease went unrenewed) said it had lost the lease.
    lost = {(e["holder"], e["batch"]) for ev in events.values() for e in ev
            if e["event"] == "fleet_lost"}
    assert len(by_batch[orphan]) == 2
    for batch, spans in by_batch.items():
        for holder, _, _ in spans[:-1]:
            assert batch == orphan or (holder, batch) in lost, (batch, spans)

    # Failures archived exactly once each.
    expected = sorted(s for s in range(1000, 1000 + SEEDS) if s % FAIL_EVERY == 0)
    assert sorted(int(o["Key"].rsplit("-", 1)[1].split(".")[0]) for o in failures) == expected
    archived = [e["seed"] for ev in events.values() for e in ev if e["event"] == "archived"]
    assert sorted(archived) == expected
    assert not [e for ev in events.values() for e in ev if e["event"] == "archive_duplicate"]
