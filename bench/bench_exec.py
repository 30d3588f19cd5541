"""The exec target's own cost per seed, against a bare loop spawning the same program, same run.

    .venv/bin/python bench/bench_exec.py -n 500

exit-code protocol with `true {seed}` (a program that does nothing: all the time is overhead):
  bare      subprocess.run(["true", seed]) in a loop: the floor any runner pays (fork/exec/wait)
  target    ExecTarget.run_batch in a process that is not a worker (no sweep)
  worker    the same as a daemon worker runs it (session leader and subreaper: every run's
            leftovers swept)
json-lines with examples/exec-json-lines/tiny_vopr.py, one process per batch of 16 seeds:
  direct    the example run directly over the same seeds (reading its stdout)
  target    ExecTarget.run_batch over the same seeds

Each mode runs in its own process; wall time and the CPU time of that process (voprd's side, not
the child's) are reported, with ratios to the floor measured in the same run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TINY_VOPR = str(ROOT / "examples" / "exec-json-lines" / "tiny_vopr.py")
BATCH = 16


def measure(mode: str, count: int) -> tuple[float, float]:
    from voprd import procs
    from voprd.options import RunOptions
    from voprd.targets.exec import ExecTarget

    if mode == "exit-worker":
        os.setsid()
        procs.claim_descendants()
    cpu, wall = time.process_time(), time.perf_counter()
    if mode == "exit-bare":
        for seed in range(count):
            subprocess.run(["true", str(seed)], check=True)
    elif mode in ("exit-target", "exit-worker"):
        options = RunOptions(target="exec", exec_cmd="true {seed}", exec_protocol="exit-code")
        results = list(ExecTarget("true {seed}").run_batch(range(count), options))
        assert all(result.status == "ok" for result in results)
    elif mode == "json-direct":
        for start in range(0, count, BATCH):
            out = subprocess.run([sys.executable, TINY_VOPR, "--json", "--seed", str(start),
                                  "-n", str(BATCH)], capture_output=True, check=False).stdout
            assert out.count(b'"iteration"') == BATCH
    elif mode == "json-target":
        command = f"{sys.executable} {TINY_VOPR}"
        options = RunOptions(target="exec", exec_cmd=command)
        target = ExecTarget(command)
        for start in range(0, count, BATCH):
            assert len(list(target.run_batch(range(start, start + BATCH), options))) == BATCH
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-n", type=int, default=500)
    parser.add_argument("--mode")
    args = parser.parse_args()
    if args.mode:
        wall, cpu = measure(args.mode, args.n)
        print(f"{wall} {cpu}")
        return 0
    figures: dict[str, tuple[float, float]] = {}
    for mode in ("exit-bare", "exit-target", "exit-worker", "json-direct", "json-target"):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "-n", str(args.n)],
                             capture_output=True, check=True, text=True).stdout.split()
        figures[mode] = (float(out[0]), float(out[1]))
    print(f"load average {os.getloadavg()[0]:.1f}, {args.n} seeds per mode")
    for mode, (wall, cpu) in figures.items():
        floor = figures["exit-bare" if mode.startswith("exit") else "json-direct"]
        print(f"  {mode:12} {args.n / wall:8.0f} seeds/s  {wall / floor[0]:5.2f}x wall  "
              f"{cpu / args.n * 1000:6.2f} ms CPU/seed in this process")
    return 0


if __name__ == "__main__":
    sys.exit(main())
