"""The live progress line's cost: CPU time of one redraw, and of a second of redraws.

Run from the repository root:  .venv/bin/python -m bench.bench_progress [--redraws 2000]

`voprd.service.live.LiveProgress` redraws its line every REFRESH_S (0.25 s) from a snapshot of the
daemon's counters; here it draws to a terminal console writing into /dev/null (rich does all its
work: layout, the bar, the escape codes), timed in process CPU time. The daemon's main loop pays
this per redraw, nothing per seed.
"""

from __future__ import annotations

import argparse
import os
import time

from rich.console import Console

from voprd.events import FingerprintCount
from voprd.service.live import REFRESH_S, LiveProgress, Snapshot


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--redraws", type=int, default=2000)
    args = parser.parse_args(argv)
    with open(os.devnull, "w") as sink:
        console = Console(file=sink, force_terminal=True, width=120)
        live = LiveProgress(console)
        distinct = [FingerprintCount(fingerprint="f", invariant="durability", count=3,
                                     first_seed=2)]
        started = time.process_time()
        for index in range(args.redraws):
            live.show(Snapshot(done=index, total=args.redraws * 10, done_this_start=index,
                               elapsed_s=1.0 + index * REFRESH_S, failures=index // 100,
                               distinct=distinct))
        cpu_s = time.process_time() - started
        live.clear()
    per_redraw_ms = cpu_s / args.redraws * 1000
    per_second = per_redraw_ms / REFRESH_S / 1000
    print(f"# live progress line ({time.strftime('%Y-%m-%d %H:%M:%S')}, "
          f"load {os.getloadavg()[0]:.1f})")
    print(f"one redraw: {per_redraw_ms:.3f} ms CPU over {args.redraws} redraws")
    print(f"at {1 / REFRESH_S:g} redraws/s: {per_second * 100:.3f} % of one core")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
