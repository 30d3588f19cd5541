"""Seeds/s through the daemon (N workers) vs the same seeds in a plain loop in one process, and the
daemon main process's CPU use.

    .venv/bin/python bench/bench_daemon.py --target tests.targets_for_tests:Burn -n 300
    .venv/bin/python bench/bench_daemon.py --target builtin -n 300     # once the simulator lands

Both figures come from the same run of this script, so the ratio is meaningful on a noisy machine
even when the absolute rates are not. Main-process CPU is sampled from /proc/PID/stat between the
first and the last `iteration` event (steady state, start-up imports excluded) and also reported
over the whole process lifetime.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from voprd.events import decode_event  # noqa: E402
from voprd.options import RunOptions  # noqa: E402
from voprd.service.worker import run_one  # noqa: E402
from voprd.targets.loader import load_target  # noqa: E402

TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICKS_PER_S  # utime + stime


def plain_loop(target_spec: str, first: int, count: int) -> tuple[float, float]:
    """(seeds/s, CPU seconds per seed) of the seeds run one after another in this process."""
    target = load_target(target_spec)
    options = RunOptions(target=target_spec)
    started, cpu_started = time.perf_counter(), time.process_time()
    for seed in range(first, first + count):
        run_one(target, seed, options)
    cpu_per_seed = (time.process_time() - cpu_started) / count
    return count / (time.perf_counter() - started), cpu_per_seed


def split_loops(target_spec: str, first: int, count: int, processes: int) -> float:
    """Seeds/s of `processes` independent plain loops, each over its share of the seeds, started
    together: the ideal a pool could reach on this machine right now (no dispatch, no
    checkpoints). Comparing the daemon with it separates daemon overhead from machine load."""
    share = -(-count // processes)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    started = time.perf_counter()
    procs = [
        subprocess.Popen([sys.executable, __file__, "--target", target_spec, "--loop-part",
                          str(first + index * share), str(min(share, count - index * share))],
                         cwd=ROOT, env=env)
        for index in range(processes)
    ]
    for proc in procs:
        assert proc.wait() == 0
    return count / (time.perf_counter() - started)


def through_daemon(target_spec: str, first: int, count: int, workers: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="voprd-bench-") as state:
        argv = [sys.executable, "-m", "voprd", "--state-dir", state, "--target", target_spec,
                "--seed", str(first), "-n", str(count), "--workers", str(workers), "--json"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        launched = time.perf_counter()
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        iteration_times: list[float] = []

        def read() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if decode_event(line).type == "iteration":
                    iteration_times.append(time.perf_counter())

        reader = threading.Thread(target=read)
        reader.start()
        samples: list[tuple[float, float]] = []
        while proc.poll() is None:
            value = cpu_s(proc.pid)
            if value is not None:
                samples.append((time.perf_counter(), value))
            time.sleep(0.05)
        reader.join()
        total_wall_s = time.perf_counter() - launched
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
    # The daemon and its workers (reaped by it), start-up included: the whole cost of the seeds.
    tree_cpu_s = (children.ru_utime - children_before.ru_utime
                  + children.ru_stime - children_before.ru_stime)
    assert len(iteration_times) == count, f"daemon reported {len(iteration_times)} of {count}"
    first_t, last_t = iteration_times[0], iteration_times[-1]
    window = [(t, c) for t, c in samples if first_t <= t <= last_t]
    if len(window) < 2:  # too short to sample (the 2-seed start-up run)
        window = samples[-2:] if len(samples) >= 2 else [(0.0, 0.0), (1.0, 0.0)]
    steady_cpu_s = window[-1][1] - window[0][1]
    steady_wall_s = window[-1][0] - window[0][0]
    return {
        "rate_steady": (count - 1) / max(last_t - first_t, 1e-9),
        "rate_wall": count / total_wall_s,
        "main_cpu_pct_steady": 100 * steady_cpu_s / steady_wall_s,
        "main_cpu_pct_lifetime": 100 * samples[-1][1] / (samples[-1][0] - launched),
        "tree_cpu_per_seed_s": tree_cpu_s / count,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", default="tests.targets_for_tests:Burn")
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=1, help="alternate loop/daemon N times")
    parser.add_argument("--loop-part", nargs=2, type=int, metavar=("FIRST", "COUNT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loop_part:
        plain_loop(args.target, args.loop_part[0], args.loop_part[1])
        return 0
    load_before = os.getloadavg()[0]
    print(f"target {args.target}, {args.n} seeds from {args.seed}, {os.cpu_count()} cores, "
          f"load average {load_before:.1f} before")
    for round_index in range(args.rounds):
        loop_rate, loop_cpu_per_seed = plain_loop(args.target, args.seed, args.n)
        daemon = through_daemon(args.target, args.seed, args.n, args.workers)
        split_rate = split_loops(args.target, args.seed, args.n, args.workers)
        efficiency = loop_cpu_per_seed / daemon["tree_cpu_per_seed_s"]
        # Start-up (imports of the daemon and each worker) measured with a 2-seed run, so the
        # steady-state efficiency can be told apart from a cost paid once per start.
        tiny = through_daemon(args.target, args.seed, 2, args.workers)
        startup_cpu_s = max(2 * tiny["tree_cpu_per_seed_s"] - 2 * loop_cpu_per_seed, 0.0)
        steady_cpu_per_seed = daemon["tree_cpu_per_seed_s"] - startup_cpu_s / args.n
        steady_efficiency = loop_cpu_per_seed / steady_cpu_per_seed
        print(f"round {round_index + 1}:")
        print(f"  plain loop, 1 process:        {loop_rate:8.2f} seeds/s "
              f"({1000 / loop_rate:.1f} ms/seed, {1000 * loop_cpu_per_seed:.1f} ms CPU/seed)")
        print(f"  daemon, {args.workers} workers, steady:    {daemon['rate_steady']:8.2f} seeds/s  "
              f"ratio {daemon['rate_steady'] / loop_rate:.2f}x")
        print(f"  {args.workers} independent plain loops: {split_rate:8.2f} seeds/s  "
              f"ratio {split_rate / loop_rate:.2f}x (the machine's ceiling right now); "
              f"daemon steady / this = {daemon['rate_steady'] / split_rate:.2f}")
        print(f"  daemon, wall incl. start-up:  {daemon['rate_wall']:8.2f} seeds/s  "
              f"ratio {daemon['rate_wall'] / loop_rate:.2f}x")
        print(f"  daemon CPU/seed, all processes incl. start-up: "
              f"{1000 * daemon['tree_cpu_per_seed_s']:.1f} ms -> CPU efficiency "
              f"{efficiency:.3f}, i.e. {args.workers * efficiency:.2f}x on "
              f"{args.workers} idle cores")
        print(f"  start-up CPU (daemon + workers, from a 2-seed run): {startup_cpu_s:.2f} s; "
              f"steady CPU/seed {1000 * steady_cpu_per_seed:.1f} ms -> efficiency "
              f"{steady_efficiency:.3f}, i.e. {args.workers * steady_efficiency:.2f}x on "
              f"{args.workers} idle cores")
        print(f"  daemon main process CPU: {daemon['main_cpu_pct_steady']:.2f}% of one core "
              f"(steady), {daemon['main_cpu_pct_lifetime']:.2f}% over its lifetime")
    print(f"load average {os.getloadavg()[0]:.1f} after (other processes share the cores)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
