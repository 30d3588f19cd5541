"""AWS backend benchmark: alert/checkpoint latency, spot notice to checkpoint, API calls/h, cost.

Run from the repository root:  .venv/bin/python -m bench.bench_aws [--calls-seconds 180]

Everything runs against a local moto server over HTTP (and a fake IMDSv2 server), so latencies are
those of this machine's loopback plus voprd's own queueing, not of real AWS (real S3/SNS add their
own round trip, typically tens of milliseconds inside a region). Figures:

1. failure detected -> SNS publish accepted (backend level: `alerts.send` to the publish answer).
2. checkpoint saved (final) -> S3 PutObject answered (backend level).
3. spot notice set in IMDS -> checkpoint stored in S3, through a real daemon process, split into
   notice -> detected (bounded by the 1 s IMDS poll) and detected -> stored.
4. AWS API calls per hour of a real daemon at default settings, counted by operation from moto's
   request recording over --calls-seconds, start-up calls reported apart.
5. The monthly cost of the default stack (deploy/cloudformation.yaml, one instance) those calls
   imply, itemised, with the us-east-1 list prices assumed below (assumptions: check them against
   current pricing). `--spot-price` plugs in today's price (the guide's own assumption is
   $0.008/h); the formula is 730 h x spot + everything else, which does not depend on it.

The daemon runs as the stack's single instance does: alone (`--no-fleet`, no leases; the stack
passes a run name only with FleetSize > 1). `--fleet` measures a fleet of one instead.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HOURS_PER_MONTH = 730.0

# us-east-1 list prices (USD) ASSUMED for the cost table; not fetched, check before relying on them.
PRICES: dict[str, float] = {
    "ec2_c7g_medium_on_demand_per_h": 0.0363,
    # The guide's own assumption (vopr-aws-guide.md's cost table); varies by hour and zone.
    "ec2_c7g_medium_spot_per_h": 0.008,
    "ebs_gp3_per_gb_month": 0.08,
    "s3_put_per_1000": 0.005,
    "s3_get_per_1000": 0.0004,
    "s3_storage_per_gb_month": 0.023,
    "cw_logs_ingest_per_gb": 0.50,
    "cw_logs_storage_per_gb_month": 0.03,
    "cw_custom_metric_per_month": 0.30,
    "cw_api_requests_per_1000": 0.01,  # PutMetricData
    "cw_alarm_standard_per_month": 0.10,
    "sns_publish_per_million": 0.50,
    "sns_email_per_100000": 2.00,
    "kms_key_per_month": 1.00,
}
ALARMS = 2  # the stack's FailuresDetected and NoProgress alarms
EBS_GB = 8  # the stack's gp3 root volume: the size of Amazon Linux 2023's root snapshot
GOAL_TOTAL_USD = 10.45


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def _summary_ms(values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (f"n={len(ms)} p50={statistics.median(ms):.1f} ms p90={_percentile(ms, 0.9):.1f} ms "
            f"max={max(ms):.1f} ms")


async def backend_latencies(world: Any, samples: int) -> dict[str, list[float]]:
    from tests.aws_records import alert_text, checkpoint
    from voprd.config import Settings
    from voprd.sinks.aws import AwsBackend, AwsTuning

    settings = Settings(bucket=world.bucket, sns_topic_arn=world.topic_arn,
                        log_group=world.log_group, region="us-east-1")
    with tempfile.TemporaryDirectory() as state_dir:
        backend = AwsBackend(settings, Path(state_dir), "i-bench", tuning=AwsTuning())
        await backend.start()
        assert backend._drainer is not None
        health = backend._drainer.health
        alert_s: list[float] = []
        checkpoint_s: list[float] = []
        for index in range(samples):
            sent = health["sns"].sent
            started = time.perf_counter()
            await backend.alerts.send(*alert_text(1000 + index, f"s3://b/failures/{index}.json"))
            while health["sns"].sent == sent:
                await asyncio.sleep(0.0005)
            alert_s.append(time.perf_counter() - started)
            sent = health["s3"].sent
            started = time.perf_counter()
            await backend.checkpoints.save(checkpoint(index + 1), final=True)
            while health["s3"].sent < sent + 2:  # latest.json and the daily copy
                await asyncio.sleep(0.0005)
            checkpoint_s.append(time.perf_counter() - started)
        await backend.close()
    return {"alert": alert_s, "checkpoint": checkpoint_s}


def daemon_env(world: Any, imds_url: str | None) -> dict[str, str]:
    from tests.aws_fixtures import daemon_env as shared_daemon_env

    return shared_daemon_env(world, imds_url, VOPRD_TEST_WORK_MS="20",
                             VOPRD_TEST_FAIL_EVERY="1000000", VOPRD_INSTANCE="i-bench")


def start_daemon(env: dict[str, str], state: Path, *extra: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "voprd", "--workers", "2", "--target",
         "tests.targets_for_tests:Flaky", "--seed", "0", "--state-dir", str(state), *extra],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )


def classify(entry: dict[str, Any]) -> str:
    """Service:Operation of one recorded request."""
    headers = {k.lower(): v for k, v in (entry.get("headers") or {}).items()}
    url = str(entry.get("url", ""))
    target = headers.get("x-amz-target")
    if target:
        return (target.replace("Logs_20140328.", "logs:")
                .replace("GraniteServiceVersion20100801.", "cloudwatch:"))
    if "/operation/" in url:  # Smithy RPC v2 (CloudWatch)
        return "cloudwatch:" + url.rsplit("/operation/", 1)[1].split("?")[0]
    body = entry.get("body") or ""
    if entry.get("body_encoded"):
        body = base64.b64decode(body).decode(errors="replace")
    for part in str(body).split("&"):
        if part.startswith("Action="):
            return "query:" + part.removeprefix("Action=")
    path = url.split("?", 1)[0]
    prefixes = ("checkpoints", "failures", "leases", "done", "progress", "alerts", "corrupt")
    kind = next((name for name in prefixes if f"/{name}/" in path), "bucket")
    return f"s3:{entry.get('method')} {kind}"


def count_calls(world: Any, seconds: float, recording: Path, daemon_args: tuple[str, ...] = ()
                ) -> tuple[Counter[str], Counter[str]]:
    """(start-up calls, steady-state calls in `seconds`) of a daemon at default settings."""
    base = world.server.url + "/moto-api/recorder/"
    urllib.request.urlopen(urllib.request.Request(base + "reset-recording", method="POST"))
    urllib.request.urlopen(urllib.request.Request(base + "start-recording", method="POST"))
    with tempfile.TemporaryDirectory() as tmp:
        daemon = start_daemon(daemon_env(world, None), Path(tmp), *daemon_args)
        try:
            time.sleep(8.0)  # start-up: validation, first checkpoint, log stream creation
            startup_lines = len(recording.read_text().splitlines()) if recording.exists() else 0
            time.sleep(seconds)
            steady_lines = len(recording.read_text().splitlines())
            daemon.send_signal(signal.SIGTERM)
            daemon.communicate(timeout=60)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
    urllib.request.urlopen(urllib.request.Request(base + "stop-recording", method="POST"))
    entries = [json.loads(line) for line in recording.read_text().splitlines()]
    startup = Counter(classify(e) for e in entries[:startup_lines])
    steady = Counter(classify(e) for e in entries[startup_lines:steady_lines])
    return startup, steady


def cost_table(per_hour: Counter[str], spot_per_h: float) -> list[tuple[str, str, float]]:
    """The default stack's monthly cost, itemised: EC2 is 730 h x `spot_per_h`; every other row
    is independent of the spot price."""
    p = PRICES
    s3_puts = sum(v for k, v in per_hour.items() if k.startswith("s3:PUT")) * HOURS_PER_MONTH
    s3_other = sum(v for k, v in per_hour.items()
                   if k.startswith("s3:") and not k.startswith("s3:PUT")) * HOURS_PER_MONTH
    metric_calls = per_hour.get("cloudwatch:PutMetricData", 0) * HOURS_PER_MONTH
    log_calls = per_hour.get("logs:PutLogEvents", 0) * HOURS_PER_MONTH
    log_gb = log_calls * 600 / 1e9  # one ~600-byte event per call at default settings
    rows = [
        ("EC2 c7g.medium spot", f"{HOURS_PER_MONTH:g} h x ${spot_per_h}/h (assumed)",
         HOURS_PER_MONTH * spot_per_h),
        ("EBS gp3 root volume", f"{EBS_GB} GB x ${p['ebs_gp3_per_gb_month']}/GB-month",
         EBS_GB * p["ebs_gp3_per_gb_month"]),
        ("Public IPv4 address", "none (Network=ipv6-only)", 0.0),
        ("KMS key", "1 customer managed key (topic and log group)", p["kms_key_per_month"]),
        ("CloudWatch custom metrics", "4 metrics, no dimension",
         4 * p["cw_custom_metric_per_month"]),
        ("PutMetricData requests", f"{metric_calls:,.0f} calls/month",
         metric_calls / 1000 * p["cw_api_requests_per_1000"]),
        ("CloudWatch alarms", f"{ALARMS} standard alarms",
         ALARMS * p["cw_alarm_standard_per_month"]),
        ("CloudWatch Logs", f"{log_gb:.3f} GB/month ingested and kept ({log_calls:,.0f} calls)",
         log_gb * (p["cw_logs_ingest_per_gb"] + p["cw_logs_storage_per_gb_month"])),
        ("S3 requests", f"{s3_puts:,.0f} PUT + {s3_other:,.0f} other/month",
         s3_puts / 1000 * p["s3_put_per_1000"] + s3_other / 1000 * p["s3_get_per_1000"]),
        ("S3 storage", "< 1 GB (checkpoints, versions, archives, wheels)",
         1.0 * p["s3_storage_per_gb_month"]),
        ("SNS", "a few alerts/month (first 1,000 e-mails free)", 0.0),
    ]
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--spot-runs", type=int, default=3)
    parser.add_argument("--calls-seconds", type=float, default=180.0)
    parser.add_argument("--calls-only", action="store_true",
                        help="only the API call count and the cost (no latency or spot runs)")
    parser.add_argument("--fleet", action="store_true",
                        help="count a fleet of one (leases) instead of the lone daemon")
    parser.add_argument("--spot-price", type=float, default=PRICES["ec2_c7g_medium_spot_per_h"],
                        help="c7g.medium spot USD/h (default: the guide's assumption, 0.008)")
    args = parser.parse_args(argv)

    recording = Path(tempfile.mkdtemp()) / "moto-recording.jsonl"
    os.environ["MOTO_RECORDER_FILEPATH"] = str(recording)
    from tests.aws_fixtures import AWS_ENV, MotoServer

    server = MotoServer()
    server.start()
    os.environ.update(AWS_ENV)
    os.environ["AWS_ENDPOINT_URL"] = server.url
    import logging

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    def world() -> Any:
        from tests.aws_fixtures import make_world

        return make_world(server)

    print(f"# voprd AWS benchmark ({time.strftime('%Y-%m-%d %H:%M:%S')}, moto on loopback, "
          f"load {os.getloadavg()[0]:.1f})")
    if not args.calls_only:
        latency_and_spot(world, args.samples, args.spot_runs)
    mode = ("fleet of one", ()) if args.fleet else ("lone daemon", ("--no-fleet",))
    startup, steady = count_calls(world(), args.calls_seconds, recording, mode[1])
    scale = 3600.0 / args.calls_seconds
    per_hour: Counter[str] = Counter({k: round(v * scale) for k, v in steady.items()})
    print(f"\n{mode[0]}: start-up calls (once per start): {dict(sorted(startup.items()))}")
    print(f"steady-state calls over {args.calls_seconds:g} s, scaled to one hour:")
    for name, count in sorted(per_hour.items()):
        print(f"  {name:40s} {count:6d}/h")
    print(f"  {'total':40s} {sum(per_hour.values()):6d}/h")

    rows = cost_table(per_hour, args.spot_price)
    total = sum(row[2] for row in rows)
    print(f"\nmonthly cost of the default stack, {mode[0]} (us-east-1 list prices ASSUMED):")
    for item, basis, usd in rows:
        print(f"  {item:28s} {basis:58s} ${usd:6.2f}")
    print(f"  {'total':28s} {'':58s} ${total:6.2f}  (goal <= ${GOAL_TOTAL_USD})")
    rest = total - rows[0][2]
    print(f"  formula: 730 h x spot + ${rest:.2f}; the goal holds while the spot price is <= "
          f"${(GOAL_TOTAL_USD - rest) / HOURS_PER_MONTH:.4f}/h")
    print(f"prices assumed: {json.dumps(PRICES)}")
    server.stop()
    return 0


def latency_and_spot(world: Any, samples: int, spot_runs: int) -> None:
    latencies = asyncio.run(backend_latencies(world(), samples))
    print(f"failure detected -> SNS publish accepted: {_summary_ms(latencies['alert'])} "
          "(goal < 1 s)")
    print(f"final checkpoint saved -> S3 PutObject answered: "
          f"{_summary_ms(latencies['checkpoint'])}")

    from bench.bench_spot import spot_run  # the spot path's own benchmark, one measurement

    rng = random.Random(20261127)
    spots = [(d, t - d, t) for d, t in (spot_run(world(), rng) for _ in range(spot_runs))]
    for index, (detect_s, store_s, total_s) in enumerate(spots):
        print(f"spot run {index + 1}: notice -> detected {detect_s:.2f} s (1 s IMDS poll), "
              f"detected -> checkpoint in S3 {store_s:.3f} s, notice -> stored {total_s:.2f} s")
    print(f"spot detected -> checkpoint stored: max {max(s[1] for s in spots):.3f} s "
          "(goal < 2 s); notice -> stored adds up to one poll interval (1 s)")


if __name__ == "__main__":
    raise SystemExit(main())
