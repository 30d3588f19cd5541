"""`voprd selftest`: proof that the simulator finds bugs.

Runs every planted bug of the target's system (`--target`, default builtin: the VSR's
voprd/systems/vsr/bugs.py; a plugin's `System.bugs`) over seeds 0, 1, 2, ... until the first
failure, in a process pool, and prints per bug the first failing seed, the invariant that caught it
and the seeds run. A caught seed is run again without the bug and must pass, so the failure is the
bug's doing. Exit 0 if every bug is caught within its seed budget, 1 if any survives, 2 on a usage
error. `--trials K` hunts each bug K times, from seeds 0, 1,000,000, 2,000,000, ... (fresh seeds
each time), and reports its median and worst seeds-to-detection over the trials: one lucky first
seed says little about how findable a bug is.
"""

from __future__ import annotations

import argparse
import collections
import functools
import statistics
import sys
import time
from concurrent.futures import Future, ProcessPoolExecutor

import msgspec

from voprd.events import SeedResult
from voprd.options import FAULT_CLASSES, RunOptions, parse_faults, reproduce_command
from voprd.sim.run import run_seed
from voprd.sim.system import System
from voprd.targets.loader import TargetNotFound, load_system

DEFAULT_SEED_BUDGET = 2000
DEFAULT_WORKERS = 2
TRIAL_STRIDE = 1_000_000  # trial k hunts from seed k * TRIAL_STRIDE
# Seeds submitted ahead of the lowest unfinished one, per worker: keeps both cores busy while
# bounding the seeds run past the first failure.
WINDOW_PER_WORKER = 2


class BugReport(msgspec.Struct, kw_only=True):
    bug: str
    caught: bool
    seeds_run: int
    seed: int | None = None
    kind: str | None = None
    invariant: str | None = None
    message: str | None = None
    # The caught seed passes with the bug off (None when not caught).
    clean_passes: bool | None = None
    reproduce: str | None = None
    elapsed_s: float = 0.0
    # With --trials K: seeds run in each trial (None: survived that trial's budget), and the
    # median and worst over the trials (a trial that survived counts as its budget).
    trials: list[int | None] = msgspec.field(default_factory=list)
    median_seeds_to_detection: float | None = None
    worst_seeds_to_detection: int | None = None


class SelftestReport(msgspec.Struct, kw_only=True):
    target: str
    seed_budget: int
    faults: list[str] = msgspec.field(default_factory=lambda: list(FAULT_CLASSES))
    bugs: list[BugReport]
    all_caught: bool
    median_seeds: float | None
    invariants: list[str]


@functools.lru_cache(maxsize=4)
def _system(target: str) -> System:
    return load_system(target)


def _run(
    seed: int, target: str, bugs: tuple[str, ...], faults: tuple[str, ...] = FAULT_CLASSES
) -> SeedResult:
    return run_seed(seed, RunOptions(target=target, bugs=bugs, faults=faults), _system(target))[0]


def hunt(
    pool: ProcessPoolExecutor, target: str, bug: str, seed_budget: int, window: int,
    faults: tuple[str, ...] = FAULT_CLASSES, start: int = 0,
) -> BugReport:
    """The first seed (in order) of start..start+seed_budget-1 that fails with `bug` on."""
    assert seed_budget > 0 and window > 0
    started = time.perf_counter()
    in_flight: collections.deque[Future[SeedResult]] = collections.deque()
    next_seed = start
    seeds_run = 0
    found: SeedResult | None = None
    while found is None and (in_flight or next_seed < start + seed_budget):
        while len(in_flight) < window and next_seed < start + seed_budget:
            in_flight.append(pool.submit(_run, next_seed, target, (bug,), faults))
            next_seed += 1
        result = in_flight.popleft().result()
        seeds_run += 1
        if result.status == "failed":
            found = result
    for future in in_flight:
        future.cancel()
    if found is None:
        return BugReport(bug=bug, caught=False, seeds_run=seeds_run,
                         elapsed_s=time.perf_counter() - started)
    clean = pool.submit(_run, found.seed, target, (), faults).result()
    return BugReport(
        bug=bug, caught=True, seeds_run=seeds_run, seed=found.seed, kind=found.kind,
        invariant=found.invariant or found.kind, message=found.message,
        clean_passes=clean.status == "ok",
        reproduce=reproduce_command(
            found.seed, RunOptions(target=target, bugs=(bug,), faults=faults)
        ),
        elapsed_s=time.perf_counter() - started,
    )


def run_selftest(
    bugs: list[str], seed_budget: int, workers: int, target: str = "builtin",
    faults: tuple[str, ...] = FAULT_CLASSES, trials: int = 1,
) -> SelftestReport:
    assert bugs and seed_budget > 0 and workers > 0 and trials > 0
    reports: list[BugReport] = []
    window = workers * WINDOW_PER_WORKER
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for bug in bugs:
            report = hunt(pool, target, bug, seed_budget, window, faults)
            if trials > 1:
                runs = [report] + [hunt(pool, target, bug, seed_budget, window, faults,
                                        start=k * TRIAL_STRIDE) for k in range(1, trials)]
                report.trials = [r.seeds_run if r.caught and r.clean_passes else None
                                 for r in runs]
                counted = [seeds if seeds is not None else seed_budget
                           for seeds in report.trials]
                report.median_seeds_to_detection = statistics.median(counted)
                report.worst_seeds_to_detection = max(counted)
                report.elapsed_s = sum(r.elapsed_s for r in runs)
            reports.append(report)
    caught = [r for r in reports if r.caught]
    return SelftestReport(
        target=target,
        seed_budget=seed_budget,
        faults=list(faults),
        bugs=reports,
        # A seed that also fails without the bug proves nothing about the bug.
        all_caught=all(r.caught and r.clean_passes for r in reports),
        median_seeds=statistics.median(r.seeds_run for r in caught) if caught else None,
        invariants=sorted({r.invariant for r in caught if r.invariant}),
    )


def _line(report: BugReport) -> str:
    if not report.caught:
        return f"{report.bug:28} SURVIVED  seeds run {report.seeds_run} ({report.elapsed_s:.1f}s)"
    line = (f"{report.bug:28} caught    seed {report.seed:<5} by {report.invariant:24} "
            f"seeds run {report.seeds_run:<4} ({report.elapsed_s:.1f}s)")
    if not report.clean_passes:
        line += "  BUT the seed also fails without the bug"
    if report.trials:
        line += (f"  trials: median {report.median_seeds_to_detection:g}, worst "
                 f"{report.worst_seeds_to_detection}")
    return line


def _faults(text: str) -> tuple[str, ...]:
    try:
        return parse_faults(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="voprd selftest",
        description="Run every planted bug over seeds until the simulator catches it.",
    )
    parser.add_argument("--seeds", type=_positive, default=DEFAULT_SEED_BUDGET,
                        help=f"seed budget per bug (default {DEFAULT_SEED_BUDGET})")
    parser.add_argument("--bug", action="append", default=[], metavar="NAME",
                        help="only this planted bug (repeatable; default: all, see --list-bugs)")
    parser.add_argument("--target", default="builtin",
                        help="the system whose planted bugs to hunt: builtin (default), an "
                             "entry point name or module:attribute naming a System")
    parser.add_argument("--workers", type=_positive, default=DEFAULT_WORKERS,
                        help=f"worker processes (default {DEFAULT_WORKERS})")
    parser.add_argument("--faults", type=_faults, default=FAULT_CLASSES,
                        help="fault classes: all (default), none, or a comma list of "
                             + ",".join(FAULT_CLASSES) + " (e.g. to show a bug needs a class)")
    parser.add_argument("--trials", type=_positive, default=1,
                        help="hunt each bug this many times from fresh seeds (0, 1,000,000, "
                             "...) and report median and worst seeds-to-detection (default 1)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    try:
        system = load_system(args.target)
    except TargetNotFound as error:
        parser.error(f"--target: {error}")
    bugs: list[str] = args.bug or list(system.bugs)
    if not bugs:
        parser.error(f"--target: system {system.name!r} has no planted bugs")
    try:
        system.validate_bugs(bugs)
    except ValueError as error:
        parser.error(f"--bug: {error}")
    report = run_selftest(bugs, args.seeds, args.workers, args.target, args.faults, args.trials)
    if args.json:
        sys.stdout.write(msgspec.json.encode(report).decode() + "\n")
    else:
        for bug_report in report.bugs:
            sys.stdout.write(_line(bug_report) + "\n")
        caught = sum(r.caught for r in report.bugs)
        sys.stdout.write(
            f"caught {caught} of {len(report.bugs)} bugs within {report.seed_budget} seeds each; "
            f"median seeds {report.median_seeds}; invariants: {', '.join(report.invariants)}\n"
        )
    return 0 if report.all_caught else 1
