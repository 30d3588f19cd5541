"""Three real `python -m voprd` daemons share one seed space through one moto bucket over HTTP.

Every batch is recorded done exactly once; a daemon SIGKILLed mid-batch has its batches taken
over after the lease expires and completed; no two live holders held a batch at the same time
(from the holders' lease events, all on this machine's clock); failures are archived once (the
killed daemon's outbox is delivered when it comes back, and it exits at once: the run is done).
"""

from __future__ import annotations

import itertools
import os
import re
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
from voprd.config import DEFAULT_LOG_GROUP
from voprd.fleet.core import LeaseRecord, decode_done, done_prefix, encode, lease_key, leases_prefix

ROOT = Path(__file__).resolve().parent.parent
BUCKET = "voprd-fleet"
RUN = "three"
FIRST_SEED = 1000
SEEDS = 120
BATCH = 10
FAIL_EVERY = 7  # tests.targets_for_tests:Flaky fails seed % 7 == 6
LEASE_S = 3.0
WAIT_S_MAX = 120.0


def daemon_command() -> list[str]:
    return [
        sys.executable, "-m", "voprd", "--target", "tests.targets_for_tests:Flaky",
        "--workers", "1", "--run", RUN, "--seed", str(FIRST_SEED), "-n", str(SEEDS),
        "--batch-size", str(BATCH), "--lease-seconds", str(LEASE_S), "--drain-timeout", "5",
    ]


def daemon_env(aws_env: dict[str, str], tmp_path: Path, name: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "VOPRD_"))}
    env.update(aws_env)
    env.update({
        "AWS_EC2_METADATA_DISABLED": "true", "PYTHONPATH": str(ROOT), "VOPRD_BUCKET": BUCKET,
        "VOPRD_INSTANCE": name, "VOPRD_STATE_DIR": str(tmp_path / name),
        "VOPRD_TEST_RUN_LOG": str(tmp_path / f"seeds-{name}.log"),
        "VOPRD_TEST_WORK_MS": "100", "VOPRD_TEST_FAIL_EVERY": str(FAIL_EVERY),
        "PYTHONUNBUFFERED": "1",  # a SIGKILLed daemon's last log lines must be in the file
    })
    return env


def _done_and_failures(s3: Any) -> tuple[list[Any], list[dict[str, Any]]]:
    """The run's done records, decoded, and the archived failure objects."""
    objects = s3.list_objects_v2(Bucket=BUCKET, Prefix=done_prefix(RUN))["Contents"]
    done = [decode_done(s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read())
            for o in objects]
    failures: list[dict[str, Any]] = s3.list_objects_v2(
        Bucket=BUCKET, Prefix="failures/").get("Contents", [])
    return done, failures


def _seed_of(key: str) -> int:
    """The seed of a fleet failure record: failures/{run}/seed-{seed}.json."""
    match = re.fullmatch(rf"failures/{RUN}/seed-(\d+)\.json", key)
    assert match is not None, key
    return int(match.group(1))


def _events(log_path: Path) -> list[dict[str, Any]]:
    """The daemon's structlog JSON lines about fleet leases."""
    if not log_path.exists():
        return []
    events = []
    for line in log_path.read_text().splitlines():
        if line.startswith("{") and '"fleet_' in line:
            with_fields = msgspec.json.decode(line)
            if "holder" in with_fields:
                events.append(with_fields)
    return events


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


def test_three_daemons_share_the_run_and_survive_a_sigkill(tmp_path: Path) -> None:
    names = ["alpha", "bravo", "charlie"]
    logs = {n: tmp_path / f"out-{n}.log" for n in names}
    with moto_bucket(BUCKET) as aws_env:
        boto3.client("logs", endpoint_url=aws_env["AWS_ENDPOINT_URL"]).create_log_group(
            logGroupName=DEFAULT_LOG_GROUP)
        envs = {n: daemon_env(aws_env, tmp_path, n) for n in names}
        procs = {}
        for n in names:
            with logs[n].open("wb") as out:
                procs[n] = subprocess.Popen(daemon_command(), cwd=ROOT, env=envs[n], stdout=out,
                                            stderr=subprocess.STDOUT)
        try:
            # Kill charlie in the middle of its second batch (after one renewal of it).
            def charlie_mid_batch() -> bool:
                ev = _events(logs["charlie"])
                claims = [e for e in ev if e["event"] == "fleet_claimed"]
                return len(claims) >= 2 and any(
                    e["event"] == "fleet_renewed" and e["batch"] == claims[-1]["batch"]
                    for e in ev)

            _wait_for(charlie_mid_batch, 60)
            procs["charlie"].send_signal(signal.SIGKILL)
            procs["charlie"].wait(10)
            for n in ("alpha", "bravo"):
                procs[n].wait(WAIT_S_MAX)
                assert procs[n].returncode == 0, logs[n].read_text()[-3000:]
            # Charlie comes back: its outbox is delivered, and it exits as the run is done.
            with logs["charlie"].open("ab") as out:
                again = subprocess.run(daemon_command(), cwd=ROOT, env=envs["charlie"],
                                       stdout=out, stderr=subprocess.STDOUT, timeout=60)
            assert again.returncode == 0, logs["charlie"].read_text()[-3000:]
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        s3 = boto3.client("s3", endpoint_url=aws_env["AWS_ENDPOINT_URL"])
        done, failures = _done_and_failures(s3)
        leftover = s3.list_objects_v2(Bucket=BUCKET, Prefix=leases_prefix(RUN)).get("Contents", [])
        instance_checkpoints = s3.list_objects_v2(
            Bucket=BUCKET, Prefix="checkpoints/instances/").get("Contents", [])
        status_argv = [sys.executable, "-m", "voprd", "status", "--fleet", "--run", RUN]
        status_json = subprocess.run([*status_argv, "--json"], cwd=ROOT, env=envs["alpha"],
                                     capture_output=True, text=True, timeout=60, check=True)
        status_text = subprocess.run(status_argv, cwd=ROOT, env=envs["alpha"],
                                     capture_output=True, text=True, timeout=60, check=True)

    batch_count = SEEDS // BATCH
    # Every batch in the range recorded done exactly once, with the right seeds and counts.
    assert sorted(d.batch for d in done) == list(range(batch_count))
    for d in done:
        first = FIRST_SEED + d.batch * BATCH
        assert (d.seed_first, d.seed_end) == (first, first + BATCH)
        expected_failed = [s for s in range(d.seed_first, d.seed_end)
                           if s % FAIL_EVERY == FAIL_EVERY - 1]
        assert d.failed_seeds == expected_failed and d.successes == BATCH - len(expected_failed)
    assert leftover == []  # every lease released
    # Each daemon keeps its own checkpoint (its tally), not a shared latest.json.
    assert {o["Key"] for o in instance_checkpoints} == {
        f"checkpoints/instances/{n}.json" for n in names}

    # `voprd status --fleet` (bucket from VOPRD_BUCKET): the whole run done, by three holders.
    status = msgspec.json.decode(status_json.stdout)
    assert status["watermark"] == batch_count and status["leases"] == 0
    assert sum(i["batches_done"] for i in status["instances"]) == batch_count
    assert sum(i["failures"] for i in status["instances"]) == sum(d.failures for d in done)
    assert {i["holder"] for i in status["instances"]} == {d.holder for d in done}
    assert f"run {RUN}: watermark batch {batch_count}" in status_text.stdout

    events = {n: _events(logs[n]) for n in names}
    holder_of = {n: events[n][0]["holder"] for n in ("alpha", "bravo")}
    charlie_holder = next(e["holder"] for e in events["charlie"])
    recorded = [e for ev in events.values() for e in ev if e["event"] == "fleet_done"]
    assert sorted(e["batch"] for e in recorded if e["outcome"] == "recorded") == list(
        range(batch_count))

    # The done record's holder really ran each of the batch's seeds.
    ran: dict[str, set[int]] = {}
    for n in names:
        lines = (tmp_path / f"seeds-{n}.log").read_text().splitlines()
        ran[n] = {int(line.split()[0]) for line in lines}
    by_holder = {**{h: n for n, h in holder_of.items()}, charlie_holder: "charlie"}
    for d in done:
        assert set(range(d.seed_first, d.seed_end)) <= ran[by_holder[d.holder]]

    # Charlie's batches in flight were taken over after expiry and completed by survivors.
    first_life = [e for e in events["charlie"] if e["holder"] == charlie_holder]
    charlie_claims = [e["batch"] for e in first_life if e["event"] == "fleet_claimed"]
    charlie_ended = {e["batch"] for e in first_life
                     if e["event"] in ("fleet_stopped", "fleet_lost")}
    orphans = [b for b in charlie_claims if b not in charlie_ended]
    assert 1 <= len(orphans) <= 2, orphans
    charlie_lost = {e["batch"] for e in first_life if e["event"] == "fleet_lost"}
    takeovers = [e for n in ("alpha", "bravo") for e in events[n]
                 if e["event"] == "fleet_claimed" and e["takeover_of"] == charlie_holder
                 and e["batch"] not in charlie_lost]
    # (A claim whose log line the kill cut off shows only as a takeover of charlie's lease.)
    taken_batches = sorted(e["batch"] for e in takeovers)
    assert set(orphans) <= set(taken_batches) and 1 <= len(taken_batches) <= 2, takeovers
    orphans = taken_batches
    for orphan in orphans:
        assert next(d for d in done if d.batch == orphan).holder in holder_of.values()
        charlie_valid_until = max((e["valid_until_wall"] for e in first_life
                                   if e.get("batch") == orphan and "valid_until_wall" in e),
                                  default=0.0)
        taken = next(e for e in takeovers if e["batch"] == orphan)
        assert taken["wall"] > charlie_valid_until  # only after charlie's lease ran out

    # No two live holders held the same batch at the same moment.
    by_batch: dict[int, list[tuple[str, float, float]]] = defaultdict(list)
    for n in names:
        for holder in {e["holder"] for e in events[n]}:
            mine = [e for e in events[n] if e["holder"] == holder]
            for batch, who, start, end in _hold_intervals(mine):
                by_batch[batch].append((who, start, end))
    for batch, spans in by_batch.items():
        spans.sort(key=lambda span: span[1])
        for (h1, _, end1), (h2, start2, _) in itertools.pairwise(spans):
            assert end1 <= start2, (batch, h1, h2, end1, start2)
    # A batch had a second holder only after the first was killed or (on a machine so loaded
    # that a 3 s lease went unrenewed) said it had lost the lease.
    lost = {(e["holder"], e["batch"]) for ev in events.values() for e in ev
            if e["event"] == "fleet_lost"}
    for batch, spans in by_batch.items():
        for holder, _, _ in spans[:-1]:
            assert batch in orphans or (holder, batch) in lost, (batch, spans)

    # Failures archived exactly once each (by the daemon whose done record won).
    expected = sorted(s for s in range(FIRST_SEED, FIRST_SEED + SEEDS)
                      if s % FAIL_EVERY == FAIL_EVERY - 1)
    archived = [_seed_of(o["Key"]) for o in failures]
    assert sorted(archived) == expected


def test_a_daemon_that_loses_its_lease_stops_that_batch(tmp_path: Path) -> None:
    """Another holder overwrites the lease mid-batch: the daemon's next renewal fails, it kills
    the batch's seeds and drops their failures; once the thief's lease expires the daemon takes
    the batch over, runs it again and archives its failures once."""
    seeds, log = 30, tmp_path / "out-solo.log"
    command = [a if a != str(SEEDS) else str(seeds) for a in daemon_command()]
    with moto_bucket(BUCKET) as aws_env:
        endpoint = aws_env["AWS_ENDPOINT_URL"]
        boto3.client("logs", endpoint_url=endpoint).create_log_group(
            logGroupName=DEFAULT_LOG_GROUP)
        env = daemon_env(aws_env, tmp_path, "solo")
        env["VOPRD_TEST_WORK_MS"] = "200"
        runs = tmp_path / "seeds-solo.log"
        s3 = boto3.client("s3", endpoint_url=endpoint)
        with log.open("wb") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            def running_batch() -> int | None:
                claims = [e["batch"] for e in _events(log) if e["event"] == "fleet_claimed"]
                ran = runs.read_text().split() if runs.exists() else []
                for batch in claims:
                    mine = [s for s in map(int, ran) if (s - FIRST_SEED) // BATCH == batch]
                    if 2 <= len(mine) <= 5:
                        return batch
                return None

            _wait_for(lambda: running_batch() is not None, 60)
            stolen = running_batch()
            assert stolen is not None
            thief = LeaseRecord(run=RUN, batch=stolen, holder="thief", token="t0",
                                lease_seconds=LEASE_S, acquired_at_s=time.time(),
                                expires_at_s=time.time() + LEASE_S)
            s3.put_object(Bucket=BUCKET, Key=lease_key(RUN, stolen), Body=encode(thief))
            proc.wait(WAIT_S_MAX)
            assert proc.returncode == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        done, failures = _done_and_failures(s3)

    events = _events(log)
    holder = events[0]["holder"]
    assert [e["reason"] for e in events
            if e["event"] == "fleet_lost" and e["batch"] == stolen] == ["taken_over"]
    assert f'"batch": {stolen}' in next(line for line in log.read_text().splitlines()
                                         if "fleet_batch_abandoned" in line)
    takeover = [e for e in events if e["event"] == "fleet_claimed" and e["batch"] == stolen
                and e["takeover_of"] == "thief"]
    assert len(takeover) == 1
    assert sorted(d.batch for d in done) == list(range(seeds // BATCH))
    assert all(d.holder == holder for d in done)
    ran = [int(s) for s in runs.read_text().split()]
    stolen_seeds = range(FIRST_SEED + stolen * BATCH, FIRST_SEED + (stolen + 1) * BATCH)
    assert all(ran.count(s) >= 1 for s in range(FIRST_SEED, FIRST_SEED + seeds))
    assert any(ran.count(s) == 2 for s in stolen_seeds)  # run before the loss and again after
    expected = sorted(s for s in range(FIRST_SEED, FIRST_SEED + seeds)
                      if s % FAIL_EVERY == FAIL_EVERY - 1)
    assert sorted(_seed_of(o["Key"]) for o in failures) == expected


def test_sigterm_gives_the_batch_back_and_a_restart_finishes_the_run(tmp_path: Path) -> None:
    seeds, log = 40, tmp_path / "out-solo.log"
    command = [a if a != str(SEEDS) else str(seeds) for a in daemon_command()]
    with moto_bucket(BUCKET) as aws_env:
        endpoint = aws_env["AWS_ENDPOINT_URL"]
        boto3.client("logs", endpoint_url=endpoint).create_log_group(
            logGroupName=DEFAULT_LOG_GROUP)
        env = daemon_env(aws_env, tmp_path, "solo")
        s3 = boto3.client("s3", endpoint_url=endpoint)
        with log.open("wb") as out:
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out,
                                    stderr=subprocess.STDOUT)
        try:
            _wait_for(lambda: any(e["event"] == "fleet_done" for e in _events(log)), 60)
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            assert proc.returncode == 0, log.read_text()[-3000:]
            # The unfinished batches were given back at once: no lease waits for expiry.
            assert s3.list_objects_v2(Bucket=BUCKET, Prefix=leases_prefix(RUN)).get(
                "Contents", []) == []
            released = {e["batch"] for e in _events(log) if e["event"] == "fleet_released"}
            assert released
            with log.open("ab") as out:
                again = subprocess.run(command, cwd=ROOT, env=env, stdout=out,
                                       stderr=subprocess.STDOUT, timeout=WAIT_S_MAX)
            assert again.returncode == 0, log.read_text()[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        done, failures = _done_and_failures(s3)
    assert sorted(d.batch for d in done) == list(range(seeds // BATCH))
    first_holder = _events(log)[0]["holder"]
    by_first = {d.batch for d in done if d.holder == first_holder}
    assert by_first and len(by_first) < len(done)  # each start recorded some of the batches
    assert not released & by_first  # what the drained daemon gave back, the restart ran
    expected = sorted(s for s in range(FIRST_SEED, FIRST_SEED + seeds)
                      if s % FAIL_EVERY == FAIL_EVERY - 1)
    assert sorted(_seed_of(o["Key"]) for o in failures) == expected
