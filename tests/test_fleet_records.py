"""Fleet daemons against a bucket that works against them: poisoned shared records, lease deletes
that S3 refuses (LocalStack's 501 to a conditional DeleteObject) or that an outage cuts, and
several daemons seeing the same causes. Real `python -m voprd` processes, moto over HTTP.

- Poisoned records are copied aside under corrupt/, logged (to CloudWatch too), and ignored: the
  run finishes with every batch recorded soundly and every seed run.
- A failure is archived and alerted as its result arrives, before anything about its batch's
  lease or done record: a lease delete that fails costs no failure and no alert.
- Across the fleet each fingerprint is alerted once (alerts/{run}/{fp}.json, create-only); the
  others count it into their digests.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from pathlib import Path
from typing import Any

from tests.fleet_daemons import (
    Daemon,
    FleetWorld,
    failure_seed,
    fleet_daemon,
    fleet_world,
    seeds_ran,
)
from tests.fleet_moto import s3_error
from tests.tcp_proxy import CuttableProxy
from voprd.fleet.core import (
    ProgressRecord,
    decode_alert_claim,
    decode_done,
    done_key,
    done_prefix,
    encode,
    lease_key,
    leases_prefix,
    progress_key,
)

WAIT_S = 240


def _run(daemons: list[Daemon]) -> None:
    try:
        for daemon in daemons:
            daemon.start()
        for daemon in daemons:
            assert daemon.wait(WAIT_S) == 0, daemon.tail()
    finally:
        for daemon in daemons:
            daemon.stop()


def _failing(first: int, count: int, every: int) -> list[int]:
    return [s for s in range(first, first + count) if s % every == every - 1]


def _check_run(world: FleetWorld, tmp_path: Path, run: str, first: int, seeds: int, batch: int,
               every: int, names: list[str]) -> None:
    """Every batch recorded once and soundly, every seed run, every failure archived once."""
    done = [decode_done(world.body(k)) for k in world.keys(done_prefix(run))]
    assert sorted(d.batch for d in done) == list(range(seeds // batch))
    for record in done:
        start = first + record.batch * batch
        assert (record.seed_first, record.seed_end) == (start, start + batch)
        assert record.failed_seeds == _failing(start, batch, every)
    ran = {s for name in names for s in seeds_ran(tmp_path, name)}
    assert set(range(first, first + seeds)) <= ran
    archived = sorted(s for k in world.keys(f"failures/{run}/")
                      if (s := failure_seed(run, k)) is not None)
    assert archived == _failing(first, seeds, every)


def _alerts(world: FleetWorld) -> tuple[Counter[str], int]:
    """(alerts per invariant, repeats summed over every digest) from what SNS delivered."""
    alerts: Counter[str] = Counter()
    repeats = 0
    for note in world.notifications():
        text = note["Message"]
        if note["Subject"].startswith("VOPR: Digest"):
            found = re.match(r"VOPR saw (\d+) repeat", text)
            assert found is not None, text
            repeats += int(found.group(1))
        else:
            alerts.update(re.findall(r"^Invariant: (\S+)$", text, flags=re.MULTILINE))
    return alerts, repeats


def _cloudwatch_events(world: FleetWorld, name: str) -> list[dict[str, Any]]:
    return [e for e in world.log_events() if e.get("event") == name]


def test_poisoned_records_are_quarantined_and_the_run_finishes(tmp_path: Path) -> None:
    run, first, seeds, batch, every = "poison", 100, 120, 10, 7
    forged = encode(ProgressRecord(run=run, watermark=12, batch_count=12, updated_at_s=0.0))
    poison = {
        progress_key(run): forged,  # "every batch is done": a run that ran nothing would end
        done_key(run, 3): b'{"schema": 1, "batch": 3',  # batch 3 is not done
        lease_key(run, 5): b"\x00\x01 not a lease",  # a live-looking lease nobody renews
    }
    with fleet_world() as world:
        s3 = world.client("s3")
        for key, body in poison.items():
            s3.put_object(Bucket=world.bucket, Key=key, Body=body)
        names = ["alpha", "bravo"]
        _run([fleet_daemon(world, tmp_path, name, run, "--seed", str(first), "-n", str(seeds),
                           "--batch-size", str(batch), "--lease-seconds", "3",
                           VOPRD_TEST_WORK_MS="20", VOPRD_TEST_FAIL_EVERY=str(every))
              for name in names])
        _check_run(world, tmp_path, run, first, seeds, batch, every, names)
        quarantined = {k.split("/", 2)[2]: world.body(k) for k in world.keys("corrupt/")}
        for key, body in poison.items():
            assert quarantined.get(key) == body, (key, sorted(quarantined))
        assert world.keys(leases_prefix(run)) == []
        logged = {e["key"] for e in _cloudwatch_events(world, "fleet_record_quarantined")}
    assert logged == set(poison)  # each logged (once per daemon that met it) and in CloudWatch


def test_one_alert_per_fingerprint_across_a_fleet_of_two(tmp_path: Path) -> None:
    run, first, seeds, batch, every, causes = "causes", 0, 200, 10, 5, 9
    names = ["alpha", "bravo"]
    with fleet_world() as world:
        daemons = [fleet_daemon(world, tmp_path, name, run, "--seed", str(first), "-n",
                                str(seeds), "--batch-size", str(batch), "--lease-seconds", "30",
                                VOPRD_TEST_WORK_MS="10", VOPRD_TEST_FAIL_EVERY=str(every),
                                VOPRD_TEST_CAUSES=str(causes))
                   for name in names]
        _run(daemons)
        _check_run(world, tmp_path, run, first, seeds, batch, every, names)
        alerts, repeats = _alerts(world)
        claims = [decode_alert_claim(world.body(k)) for k in world.keys(f"alerts/{run}/")]
    assert sorted(alerts) == [f"cause_{c}" for c in "abcdefghi"]
    assert set(alerts.values()) == {1}  # one alert per cause, across the fleet
    assert len(claims) == causes and len({c.fingerprint for c in claims}) == causes
    # Every other failure a daemon saw went into its digest: nothing is left uncounted.
    seen = sum(len(d.events("seed_failed")) for d in daemons)
    assert seen >= len(_failing(first, seeds, every))
    assert repeats == seen - causes
    assert {c.holder for c in claims} <= {d.events("fleet_joined")[0]["holder"] for d in daemons}


def _refuse_conditional_lease_deletes(environ: dict[str, Any]) -> tuple[str, bytes] | None:
    """LocalStack's answer to DeleteObject with If-Match: 501 Not Implemented."""
    if (environ["REQUEST_METHOD"] == "DELETE" and "/leases/" in environ["PATH_INFO"]
            and environ.get("HTTP_IF_MATCH")):
        return "501 Not Implemented", s3_error("NotImplemented",
                                               "A header you provided implies functionality "
                                               "that is not implemented")
    return None


def test_refused_lease_deletes_lose_no_failure_and_no_alert(tmp_path: Path) -> None:
    run, first, seeds, batch, every, causes = "refused", 0, 60, 10, 7, 3
    names = ["alpha", "bravo"]
    with fleet_world(intercept=_refuse_conditional_lease_deletes) as world:
        _run([fleet_daemon(world, tmp_path, name, run, "--seed", str(first), "-n", str(seeds),
                           "--batch-size", str(batch), "--lease-seconds", "3",
                           VOPRD_TEST_WORK_MS="20", VOPRD_TEST_FAIL_EVERY=str(every),
                           VOPRD_TEST_CAUSES=str(causes))
              for name in names])
        _check_run(world, tmp_path, run, first, seeds, batch, every, names)
        alerts, _ = _alerts(world)
        left = world.keys(leases_prefix(run))
        refused = _cloudwatch_events(world, "fleet_release_failed")
    assert left, "the conditional deletes were refused: the leases stay until they expire"
    assert refused and all("NotImplemented" in e["error"] for e in refused)
    assert sorted(alerts) == ["cause_a", "cause_b", "cause_c"] and set(alerts.values()) == {1}


def test_a_cut_lease_delete_loses_no_failure_and_no_alert(tmp_path: Path) -> None:
    run, first, seeds, batch, every, causes = "cut", 0, 40, 10, 7, 3
    proxy_box: list[CuttableProxy] = []
    cut_once = threading.Event()

    def cut_at_the_first_lease_delete(environ: dict[str, Any]) -> tuple[str, bytes] | None:
        if (environ["REQUEST_METHOD"] == "DELETE" and "/leases/" in environ["PATH_INFO"]
                and not cut_once.is_set()):
            cut_once.set()
            proxy_box[0].cut()  # the delete never reaches S3, and nothing else does for 12 s
            threading.Timer(12.0, proxy_box[0].mend).start()
            return "503 Slow Down", s3_error("SlowDown", "unreachable: the proxy is cut")
        return None

    with fleet_world(intercept=cut_at_the_first_lease_delete) as world, \
            CuttableProxy(int(world.endpoint.rsplit(":", 1)[1])) as proxy:
        proxy_box.append(proxy)
        # Only S3 goes through the proxy: an SNS Publish cut in flight would be sent again (SNS
        # has no idempotency key: alerts are at least once), and this test counts them exactly.
        _run([fleet_daemon(world, tmp_path, "solo", run, "--seed", str(first), "-n", str(seeds),
                           "--batch-size", str(batch), "--lease-seconds", "30",
                           AWS_ENDPOINT_URL_S3=proxy.url, VOPRD_TEST_WORK_MS="20",
                           VOPRD_TEST_FAIL_EVERY=str(every), VOPRD_TEST_CAUSES=str(causes))])
        assert cut_once.is_set() and proxy.connections > 0  # S3 went through the proxy
        _check_run(world, tmp_path, run, first, seeds, batch, every, ["solo"])
        alerts, _ = _alerts(world)
        failed = _cloudwatch_events(world, "fleet_release_failed")
    assert len(failed) == 1, failed  # the cut delete; the lease then expired on its own
    assert sorted(alerts) == ["cause_a", "cause_b", "cause_c"] and set(alerts.values()) == {1}


def test_an_alert_held_when_the_daemon_dies_is_sent_by_its_next_start(tmp_path: Path) -> None:
    """The alert is on disk (held) before its fingerprint is claimed: a daemon SIGKILLed while
    the claim hangs sends it when it starts again (an alert may repeat; none is lost)."""
    run, first, seeds, batch, every = "held", 0, 20, 10, 7
    hang = threading.Event()
    released = threading.Event()

    def hang_the_first_alert_claim(environ: dict[str, Any]) -> tuple[str, bytes] | None:
        if (environ["REQUEST_METHOD"] == "PUT" and f"/alerts/{run}/" in environ["PATH_INFO"]
                and not hang.is_set()):
            hang.set()
            released.wait(120)  # the claim never settles: the daemon dies waiting
            return "503 Slow Down", s3_error("SlowDown", "too late")
        return None

    with fleet_world(intercept=hang_the_first_alert_claim) as world:
        daemon = fleet_daemon(world, tmp_path, "solo", run, "--seed", str(first), "-n",
                              str(seeds), "--batch-size", str(batch), "--lease-seconds", "3",
                              VOPRD_TEST_WORK_MS="200", VOPRD_TEST_FAIL_EVERY=str(every))
        try:
            daemon.start()
            assert hang.wait(60), daemon.tail()
            assert daemon.proc is not None
            daemon.proc.kill()
            daemon.wait(30)
            held_seed = daemon.events("seed_failed")[0]["seed"]  # its alert was held
            assert world.notifications(settle_s=1.0) == []  # held, not sent
            released.set()
            again = fleet_daemon(world, tmp_path, "solo", run, "--seed", str(first), "-n",
                                 str(seeds), "--batch-size", str(batch), "--lease-seconds",
                                 "3", VOPRD_TEST_WORK_MS="20", VOPRD_TEST_FAIL_EVERY=str(every))
            _run([again])
        finally:
            released.set()
            daemon.stop()
        alerts = [n["Message"] for n in world.notifications()
                  if not n["Subject"].startswith("VOPR: Digest")]
    # The held alert was sent, once. The restarted daemon may alert the cause again from
    # another seed (its claim found nothing: the killed daemon's claim never reached S3): an
    # alert may repeat after a crash, never go missing.
    assert sum(f"Seed: {held_seed}\n" in text for text in alerts) == 1, alerts
    assert 1 <= len(alerts) <= 2
