"""Alert latency: a failing seed's result -> its SNS alert accepted, for a lone daemon and for a
fleet of two sharing one run (the fleet claims each fingerprint in the bucket before alerting).

Run from the repository root:  .venv/bin/python -m bench.bench_alerts [--causes 100]

Real `python -m voprd` daemons (one worker each) run the test target Flaky against a moto server
over HTTP (S3, SNS delivering to SQS, CloudWatch Logs). Every fifth seed fails, cycling through
`--causes` distinct invariants, so each cause is one fingerprint and one alert; with 100 ms seeds
each daemon finds a new cause every half second (far more often than a real run does; at 20 ms
the local, one-request-at-a-time moto server becomes the queue, not voprd). The target writes
the wall time at which it returns each failed result; moto stamps each SNS notification with the
time its Publish was accepted (milliseconds). Latency of a cause = its notification's Timestamp
minus the earliest result of that cause (in a fleet: whichever daemon saw it first). Both clocks
are this machine's. It includes the worker-to-daemon pipe, the archive, the outbox's fsync, the
fleet's claim (a PUT to S3) and the SNS round trip to a local moto: real SNS and S3 add their own
tens of milliseconds inside a region.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fleet_daemons import fleet_daemon, fleet_world  # noqa: E402

FAIL_EVERY = 5
WAIT_S = 600


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _results(path: Path) -> dict[int, float]:
    if not path.exists():
        return {}
    return {int(seed): float(at) for seed, at in
            (line.split() for line in path.read_text().splitlines() if line.strip())}


def measure(mode: str, causes: int, work_ms: int) -> list[float]:
    """Latencies (s) of every cause's alert in one run of `mode` (lone | fleet)."""
    seeds = causes * FAIL_EVERY
    names = ["alpha"] if mode == "lone" else ["alpha", "bravo"]
    run = None if mode == "lone" else "bench"
    with tempfile.TemporaryDirectory() as tmp, fleet_world() as world:
        tmp_path = Path(tmp)
        daemons = [
            fleet_daemon(world, tmp_path, name, run, "--seed", "0", "-n", str(seeds),
                         *([] if run is None else ["--batch-size", "50"]),
                         VOPRD_TEST_WORK_MS=str(work_ms), VOPRD_TEST_FAIL_EVERY=str(FAIL_EVERY),
                         VOPRD_TEST_CAUSES=str(causes),
                         VOPRD_TEST_RESULT_LOG=str(tmp_path / f"results-{name}.log")).start()
            for name in names
        ]
        try:
            for daemon in daemons:
                code = daemon.wait(WAIT_S)
                assert code in (0, 1), daemon.tail()
        finally:
            for daemon in daemons:
                daemon.stop()
        results: dict[int, float] = {}
        for name in names:
            for seed, at in _results(tmp_path / f"results-{name}.log").items():
                results[seed] = min(at, results.get(seed, at))
        notes = [n for n in world.notifications() if "Digest" not in n["Subject"]]
    first_result: dict[str, float] = {}
    for seed, at in results.items():
        cause = f"{seed // FAIL_EVERY % causes}"
        first_result[cause] = min(at, first_result.get(cause, at))
    latencies: list[float] = []
    by_invariant: dict[str, float] = {}
    for note in notes:
        accepted = _dt.datetime.strptime(note["Timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=_dt.UTC).timestamp()
        seed = int(re.search(r"^Seed: (\d+)$", note["Message"], re.MULTILINE).group(1))  # type: ignore[union-attr]
        invariant = re.search(r"^Invariant: (\S+)$", note["Message"], re.MULTILINE).group(1)  # type: ignore[union-attr]
        assert invariant not in by_invariant, f"{invariant} alerted twice"
        by_invariant[invariant] = accepted
        latencies.append(accepted - first_result[f"{seed // FAIL_EVERY % causes}"])
    assert len(latencies) == causes, (len(latencies), causes)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--causes", type=int, default=100, help="alerts per mode (fingerprints)")
    parser.add_argument("--work-ms", type=int, default=100,
                        help="time each seed takes (a new cause every 5 seeds per daemon)")
    args = parser.parse_args(argv)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # moto's per-request lines
    print(f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"--causes {args.causes} --work-ms {args.work_ms}")
    print("| mode | alerts | p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|---|")
    for mode in ("lone", "fleet"):
        ms = [v * 1000 for v in measure(mode, args.causes, args.work_ms)]
        print(f"| {mode} ({'1 daemon' if mode == 'lone' else '2 daemons, one run'}) | {len(ms)} "
              f"| {statistics.median(ms):.0f} ms | {_percentile(ms, 0.9):.0f} ms "
              f"| {_percentile(ms, 0.99):.0f} ms | {max(ms):.0f} ms |", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
