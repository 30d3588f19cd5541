"""The lone AWS daemon (`--no-fleet`) as a real process against moto: CloudWatch metrics that add up
through repeated SIGKILLs, a SIGUSR1 storm through shutdown, an endpoint that answers 500."""

from __future__ import annotations

import contextlib
import json
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tests.aws_fixtures import ROOT, AwsWorld, log_messages
from tests.test_aws_daemon_e2e import TARGET, daemon_env, metric_total, s3_checkpoint
from tests.test_daemon_hardening import signal_storm, wait_exited_unreaped
from voprd.core.records import read_checkpoint


def start(state: Path, env: dict[str, str], *args: str, out: int | Path = subprocess.DEVNULL
          ) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "voprd", "--no-fleet", "--workers", "2", "--target", TARGET,
            "--state-dir", str(state), *args]
    if isinstance(out, Path):
        with open(out, "wb") as handle:
            return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=handle,
                                    stderr=subprocess.STDOUT)
    return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=out, stderr=out)


def outbox_pending(state: Path, lane: str | None = None) -> int:
    """Rows waiting in the daemon's outbox (read-only, beside the running daemon: WAL)."""
    path = state / "aws-outbox.sqlite3"
    if not path.exists():
        return 0
    for _ in range(50):  # bound: a reader may meet a checkpointing writer
        try:
            with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                                    timeout=5)) as db:
                query = "SELECT COUNT(*) FROM items" + (" WHERE lane = ?" if lane else "")
                return int(db.execute(query, (lane,) if lane else ()).fetchone()[0])
        except sqlite3.OperationalError:
            time.sleep(0.05)
    raise AssertionError("the outbox stayed unreadable")


def seeds_run(log: Path) -> int:
    return len(log.read_text().split()) if log.exists() else 0


def test_cloudwatch_sums_equal_the_checkpoint_after_repeated_sigkills(
    aws: AwsWorld, tmp_path: Path
) -> None:
    """IterationsCompleted and FailuresDetected, summed in CloudWatch, are exactly the seeds run
    and the failures found, however often the daemon is SIGKILLed (once 255-269 of 300). Kills
    land in start-up, moments after seeds complete, and after a periodic checkpoint has folded
    the journal (every 2 s) while the minute is still open: each loses what it could."""
    state, run_log = tmp_path / "state", tmp_path / "runs.log"
    env = daemon_env(aws, tmp_path, None, VOPRD_INSTANCE="i-killed", VOPRD_TEST_WORK_MS="10",
                     VOPRD_TEST_FAIL_EVERY="40")
    count = 2400
    args = ("--seed", "0", "-n", str(count))
    rng = random.Random(20261203)
    kills = 0
    for cycle in range(9):
        before = seeds_run(run_log)
        daemon = start(state, env, *args)
        try:
            moment = ("start-up", "seeds", "after a checkpoint")[cycle % 3]
            if moment == "start-up":  # load, replay, compaction, the metrics flush
                time.sleep(rng.uniform(0.1, 1.5))
            else:
                for _ in range(1200):
                    if seeds_run(run_log) > before or daemon.poll() is not None:
                        break
                    time.sleep(0.05)
                time.sleep(rng.uniform(0.0, 0.5) if moment == "seeds" else rng.uniform(2.3, 2.8))
            # PutMetricData is not idempotent: a kill between CloudWatch's answer and the
            # outbox's commit of it (a millisecond) would send that batch twice. Every other
            # moment is fair game; see docs/daemon.md, "Metrics".
            for _ in range(400):
                if outbox_pending(state, "metrics") == 0:
                    break
                time.sleep(0.01)
            if daemon.poll() is not None:
                break
            daemon.kill()
            kills += 1
        finally:
            if daemon.poll() is None:
                daemon.kill()
            daemon.wait()
    assert kills == 9, "the run finished too soon: make it longer"
    final = start(state, env, *args)
    assert final.wait(timeout=300) == 1  # a bounded run with failures
    local = read_checkpoint((state / "checkpoint.json").read_bytes())
    failures = len([seed for seed in range(count) if seed % 40 == 39])
    assert (local.total_iterations, local.total_failures) == (count, failures)
    assert s3_checkpoint() == local
    assert outbox_pending(state) == 0
    assert metric_total("IterationsCompleted") == float(count)
    assert metric_total("FailuresDetected") == float(failures)
    print(f"{kills} kills, {seeds_run(run_log) - count} seeds re-run")


def test_a_sigusr1_storm_through_shutdown_exits_0_with_the_outbox_empty(
    aws: AwsWorld, tmp_path: Path
) -> None:
    state, output = tmp_path / "state", tmp_path / "output"
    env = daemon_env(aws, tmp_path, None, VOPRD_INSTANCE="i-storm", VOPRD_TEST_WORK_MS="10")
    daemon = start(state, env, "--seed", "0", "--drain-timeout", "10", out=output)
    try:
        for _ in range(1200):
            if (state / "checkpoint.json").exists() and read_checkpoint(
                    (state / "checkpoint.json").read_bytes()).total_iterations >= 30:
                break
            assert daemon.poll() is None, output.read_text()[-3000:]
            time.sleep(0.05)
        with signal_storm(daemon.pid) as sent:
            time.sleep(0.5)
            daemon.send_signal(signal.SIGTERM)
            wait_exited_unreaped(daemon, timeout_s=90)  # through the final flush to AWS
        daemon.wait()
    finally:
        if daemon.poll() is None:
            daemon.kill()
            daemon.wait()
    text = output.read_text()
    assert sent[0] > 50
    assert daemon.returncode == 0, text[-3000:]
    assert "Traceback" not in text
    final = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert [e for e in final if e.get("event") == "batch_complete"], "no final summary"
    assert outbox_pending(state) == 0
    local = read_checkpoint((state / "checkpoint.json").read_bytes())
    assert s3_checkpoint() == local
    assert metric_total("IterationsCompleted") == float(local.total_iterations)
    events = [json.loads(line)["event"] for line in log_messages(aws)]
    assert "batch_complete" in events and "drain" in events


class _Answer500(BaseHTTPRequestHandler):
    def _fail(self) -> None:
        body = b"<!doctype html><title>500 Internal Server Error</title><h1>oops</h1>"
        self.send_response(500)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_HEAD = _fail

    def log_message(self, format: str, *args: object) -> None:
        del format, args


@contextlib.contextmanager
def always_500() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Answer500)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_an_sns_endpoint_answering_500_is_refused_at_start_up_in_one_line(
    aws: AwsWorld, tmp_path: Path
) -> None:
    with always_500() as url:
        env = daemon_env(aws, tmp_path, None, AWS_ENDPOINT_URL_SNS=url)
        proc = subprocess.run(
            [sys.executable, "-m", "voprd", "--no-fleet", "--target", TARGET, "-n", "5",
             "--state-dir", str(tmp_path / "state")],
            cwd=ROOT, env=env, capture_output=True, timeout=120)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err[-3000:]
    assert "Traceback" not in err + proc.stdout.decode()
    assert len(err.strip().splitlines()) == 1, err
    assert "--sns-topic-arn" in err or "unreadable error" in err
