"""Fleet simulation benchmark: claim conflicts, S3 requests per batch and monthly S3 request
cost as the fleet grows (discrete-event model, voprd.fleet.sim; same core as the daemons).

    python bench/bench_fleet.py                 # 10, 50, 100, 500 daemons, with crashes
    python bench/bench_fleet.py --sizes 10 50 --no-spread   # the herd without hashed offsets
"""

from __future__ import annotations

import argparse
import sys
import time

from voprd.fleet.sim import SimParams, report_row, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 50, 100, 500])
    parser.add_argument("--sim-minutes", type=float, default=30.0)
    parser.add_argument("--crashes-per-daemon-hour", type=float, default=0.5)
    parser.add_argument("--latency-ms", type=float, default=20.0)
    parser.add_argument("--batch-s", type=float, default=60.0)
    parser.add_argument("--lease-seconds", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--no-spread", action="store_true")
    args = parser.parse_args(argv)
    header = False
    for daemons in args.sizes:
        started = time.perf_counter()
        report = simulate(SimParams(
            daemons=daemons, sim_s_max=args.sim_minutes * 60, seed=args.seed,
            crashes_per_daemon_hour=args.crashes_per_daemon_hour,
            latency_ms_median=args.latency_ms, spread=not args.no_spread,
            batch_s_mean=args.batch_s, lease_seconds=args.lease_seconds,
        ))
        row = report_row(report)
        row["busy polls/batch"] = round(report.busy_polls / max(1, report.batches_done), 3)
        row["LIST/GET/PUT/DEL per batch"] = "/".join(
            f"{report.requests[k] / max(1, report.batches_done):.2f}"
            for k in ("LIST", "GET", "PUT", "DELETE"))
        row["wall s"] = round(time.perf_counter() - started, 1)
        if not header:
            print("| " + " | ".join(row) + " |")
            print("|" + "---|" * len(row))
            header = True
        print("| " + " | ".join(str(v) for v in row.values()) + " |", flush=True)
        assert report.overlap_violations == 0 and report.duplicate_done == 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
