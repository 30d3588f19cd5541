"""A/B speed of the builtin VSR simulation: this checkout against another git revision, interleaved
seed by seed in one process, so machine load hits both alike (the noise of separate runs on a
shared machine is larger than the differences worth measuring).

Usage: python bench/ab_sim.py --base REV [--start 0] [--count 150] [--rounds 2]
                              [--different-runs] [--faults all]
The revision's `voprd/` is extracted (git archive) to a temporary directory and imported as the
package `voprd_base` (its absolute imports rewritten). Each seed runs on both sides, in alternating
order, history checks off; both sides must agree on every seed's event count (a sanity check that
they simulate the same runs). Prints events per CPU-second of each and the ratio new/base. With
`--different-runs` the sides may simulate different runs (a change of what a seed draws or does,
e.g. a new fault class): the figure then compares throughput, events per CPU-second, over the same
seeds; `--faults` sets this checkout's fault classes (the base always runs its defaults).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import io
import re
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from voprd.options import RunOptions, parse_faults
from voprd.sim import run as new_run
from voprd.systems.vsr import VSR

ROOT = Path(__file__).resolve().parent.parent
_IMPORT = re.compile(r"\bvoprd(?=[.\s])")


def extract_base(rev: str, into: Path) -> None:
    archive = subprocess.run(["git", "archive", rev, "voprd"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "voprd").rename(into / "voprd_base")
    for path in (into / "voprd_base").rglob("*.py"):
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(
            _IMPORT.sub("voprd_base", line) if line.lstrip().startswith(("from ", "import "))
            else line
            for line in lines
        ))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--different-runs", action="store_true",
                        help="the sides may simulate different runs (a behaviour change)")
    parser.add_argument("--faults", default="all", help="this checkout's fault classes")
    args = parser.parse_args()
    new_options = RunOptions(faults=parse_faults(args.faults))
    with tempfile.TemporaryDirectory(prefix="voprd-ab-") as tmp:
        extract_base(args.base, Path(tmp))
        sys.path.insert(0, tmp)
        base_run: Any = importlib.import_module("voprd_base.sim.run")
        base_options: Any = importlib.import_module("voprd_base.options").RunOptions()
        takes_system = "system" in inspect.signature(base_run.simulate).parameters
        base_run.HISTORY_CHECKS.clear()
        new_run.HISTORY_CHECKS.clear()

        def base(seed: int) -> int:
            extra = (importlib.import_module("voprd_base.systems.vsr").VSR,) if takes_system else ()
            events: int = base_run.simulate(seed, base_options, *extra).result.events
            return events

        def new(seed: int) -> int:
            return new_run.simulate(seed, new_options, VSR).result.events

        clock = time.process_time
        spent = {"base": 0.0, "new": 0.0}
        events = {"base": 0, "new": 0}
        for round_ in range(args.rounds):
            for seed in range(args.start, args.start + args.count):
                order = [("base", base), ("new", new)]
                if (seed + round_) % 2:
                    order.reverse()
                counts = []
                for name, run in order:
                    started = clock()
                    counts.append(run(seed))
                    spent[name] += clock() - started
                    events[name] += counts[-1]
                assert args.different_runs or counts[0] == counts[1], (
                    f"seed {seed}: the sides simulate different runs (--different-runs?)"
                )
    rate = {name: events[name] / spent[name] for name in spent}
    print(f"seeds {args.start}..{args.start + args.count - 1} x {args.rounds} rounds, interleaved: "
          f"base {args.base} {rate['base']:,.0f} events/s, this checkout {rate['new']:,.0f} "
          f"events/s, new/base {rate['new'] / rate['base']:.4f}")
    if args.different_runs:
        seeds = args.count * args.rounds
        print(f"  events: base {events['base']:,}, this checkout {events['new']:,} "
              f"(new/base {events['new'] / events['base']:.4f}); CPU per seed: base "
              f"{1000 * spent['base'] / seeds:.1f} ms, this checkout "
              f"{1000 * spent['new'] / seeds:.1f} ms (new/base "
              f"{spent['new'] / spent['base']:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
