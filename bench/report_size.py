"""Report size and build time over a range of default seeds (the issue's bound: <= 5 MB).

Usage: python bench/report_size.py [FIRST_SEED] [COUNT] [--bug NAME ...]
Prints one line per seed and a summary: largest report, largest before collapsing (messages),
and the time to build a report relative to running the seed once (same process, same machine).
"""

from __future__ import annotations

import sys
import time

from voprd.options import RunOptions
from voprd.report import REPORT_BYTES_MAX, report_html
from voprd.report.from_sim import picture_for_seed
from voprd.sim.run import simulate
from voprd.systems.vsr import VSR


def main(argv: list[str]) -> int:
    first = int(argv[0]) if argv else 0
    count = int(argv[1]) if len(argv) > 1 else 50
    bugs = tuple(argv[i + 1] for i, a in enumerate(argv) if a == "--bug")
    options = RunOptions(bugs=bugs)
    largest = (0, -1)
    messages_max = (0, -1)
    run_s_total = report_s_total = 0.0
    for seed in range(first, first + count):
        started = time.process_time()
        simulate(seed, options, VSR)
        run_s = time.process_time() - started
        started = time.process_time()
        picture = picture_for_seed(seed, options, VSR)
        size = len(report_html(picture).encode())
        report_s = time.process_time() - started
        run_s_total += run_s
        report_s_total += report_s
        largest = max(largest, (size, seed))
        messages_max = max(messages_max, (len(picture.messages), seed))
        print(f"seed {seed}: {size} bytes, {len(picture.messages)} messages, "
              f"{picture.verdict.events} events, run {run_s:.3f} s, report {report_s:.3f} s")
    print(f"largest report: {largest[0]} bytes (seed {largest[1]}); bound {REPORT_BYTES_MAX}")
    print(f"most messages: {messages_max[0]} (seed {messages_max[1]})")
    print(f"report build / one run, CPU time: {report_s_total / max(run_s_total, 1e-9):.2f}x "
          f"({report_s_total:.1f} s / {run_s_total:.1f} s)")
    return 0 if largest[0] <= REPORT_BYTES_MAX else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
