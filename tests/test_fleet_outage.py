"""Fleet daemons ride out an outage of every AWS endpoint (S3, SNS, CloudWatch, Logs): real
daemons reach moto through a loopback proxy that is cut for 15 s mid-run. Neither exits; they
report themselves degraded meanwhile (status dump and log), and the run then finishes with every
batch recorded done once and every failure archived once. A lease held at the cut expires (a 3 s
lease, 4 s batches): its seeds are abandoned and the batch is taken over afterwards, as any lost
lease is."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

from tests.fleet_daemons import failure_seed, fleet_daemon, fleet_world, seeds_ran, wait_for
from tests.tcp_proxy import CuttableProxy
from voprd.fleet.core import decode_done, done_prefix, leases_prefix

RUN = "outage"
FIRST_SEED, SEEDS, BATCH, FAIL_EVERY = 500, 120, 10, 7
OUTAGE_S = 15.0


def _status(path: Path) -> dict[str, object]:
    try:
        status: dict[str, object] = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return status


def test_two_fleet_daemons_ride_out_a_15s_outage(tmp_path: Path) -> None:
    with fleet_world() as world, CuttableProxy(int(world.endpoint.rsplit(":", 1)[1])) as proxy:
        daemons = [
            fleet_daemon(world, tmp_path, name, RUN, "--seed", str(FIRST_SEED), "-n", str(SEEDS),
                         "--batch-size", str(BATCH), "--lease-seconds", "3",
                         endpoint=proxy.url, VOPRD_TEST_WORK_MS="400",
                         VOPRD_TEST_FAIL_EVERY=str(FAIL_EVERY)).start()
            for name in ("alpha", "bravo")
        ]
        try:
            wait_for(lambda: len(world.keys(done_prefix(RUN))) >= 2, 90, "two batches done")
            # Cut just after alpha claimed a batch: its 4 s of seeds outlast the 3 s lease.
            claims = len(daemons[0].events("fleet_claimed"))
            wait_for(lambda: len(daemons[0].events("fleet_claimed")) > claims, 30, "a claim")
            proxy.cut()
            cut_at = time.monotonic()
            status_files = [tmp_path / d.name / "status.json" for d in daemons]
            # Both say they are degraded (status dump on SIGUSR1, and the log), and keep going.
            for daemon, status_file in zip(daemons, status_files, strict=True):
                def degraded(daemon=daemon, status_file=status_file) -> bool:  # type: ignore[no-untyped-def]
                    assert daemon.proc is not None
                    os.kill(daemon.proc.pid, signal.SIGUSR1)
                    time.sleep(0.3)
                    return _status(status_file).get("health") == "degraded"
                wait_for(degraded, OUTAGE_S, f"{daemon.name} reports degraded")
            time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_at)))
            assert all(d.running() for d in daemons), [d.tail() for d in daemons]
            outage_status = [_status(f) for f in status_files]
            proxy.mend()
            for daemon in daemons:
                assert daemon.wait(240) == 0, daemon.tail()
        finally:
            for daemon in daemons:
                daemon.stop()
        done_keys = world.keys(done_prefix(RUN))
        done = [decode_done(world.body(k)) for k in done_keys]
        leftover = world.keys(leases_prefix(RUN))
        failures = sorted(s for k in world.keys(f"failures/{RUN}/")
                          if (s := failure_seed(RUN, k)) is not None)

    batches = SEEDS // BATCH
    assert sorted(d.batch for d in done) == list(range(batches))  # each batch recorded once
    for record in done:
        assert (record.seed_first, record.seed_end) == (FIRST_SEED + record.batch * BATCH,
                                                         FIRST_SEED + (record.batch + 1) * BATCH)
    assert leftover == []
    ran = seeds_ran(tmp_path, "alpha") + seeds_ran(tmp_path, "bravo")
    assert set(range(FIRST_SEED, FIRST_SEED + SEEDS)) <= set(ran)
    expected = [s for s in range(FIRST_SEED, FIRST_SEED + SEEDS)
                if s % FAIL_EVERY == FAIL_EVERY - 1]
    assert failures == expected  # each archived once, whichever daemon ran it
    for status in outage_status:
        assert status["health"] == "degraded" and status["mode"] == "fleet"
        assert "s3" in str(status["health_detail"]).lower(), status
    # Leases held at the cut could not be renewed: lost (their seeds abandoned), taken over after
    # the outage, and run again, as with any lost lease.
    lost = [e for d in daemons for e in d.events("fleet_lost")]
    assert lost and all(e["reason"] == "expired" for e in lost), lost
    for daemon in daemons:
        names = [e.get("event") for e in daemon.events()]
        assert "health_degraded" in names and "health_restored" in names, daemon.tail()
        assert "fleet_s3_unavailable" in names and "fleet_s3_available" in names
