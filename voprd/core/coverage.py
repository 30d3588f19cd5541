"""What the seeds exercised, and where to look next (pure: the daemon feeds it seed results).

- `CoverageTally`: per protocol path (`System.coverage_paths`, counted by `env.cover` and carried in
  `SeedResult.coverage`), the seeds that exercised it; per focus family, the focus seeds run and
  the paths they exercised. `choose_focus` picks the family for the next focus seed: the rarest
  path (fewest seeds so far, a path never seen first) is the target, and a UCB1 bandit over the
  fault families (`voprd.sim.faults.SWARM_FAMILIES` whose class the run selects) picks the family
  whose focus seeds exercised it most often, trying each one early.
- `BoundTally`: the bounds seeds reached, per configuration fingerprint (`SeedResult.config`). A
  bound *recurs* when at least `RECUR_SEEDS_MIN` seeds of one configuration reached it (since the
  daemon started): the status lists those, so a configuration that keeps running into a limit
  (the safety phase cut short, a system's own bound) is seen, not buried in a total.

Focus seeds are seeds of a separate space (`voprd.sim.faults.focus_seed`): each is reproduced by
its seed number alone, like any other seed; they never enter the run's exact progress.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Protocol

from voprd.events import BoundRecurrence, CoverageStatus, FocusArm, SeedResult
from voprd.sim.faults import focus_seed, is_focus_seed

RECUR_SEEDS_MIN = 3
RECURRING_SHOWN_MAX = 20
CONFIGS_TRACKED_MAX = 4096  # configurations remembered (beyond: bounds still counted in totals)


class CoverageTally:
    def __init__(self, paths: Sequence[str], families: Sequence[str]) -> None:
        self.paths = list(paths)
        self.families = list(families)
        self.seeds = 0
        self.path_seeds: dict[str, int] = dict.fromkeys(self.paths, 0)
        self.focus_seeds = 0
        self.focus_failures = 0
        self.arm_runs: dict[str, int] = dict.fromkeys(self.families, 0)
        self.arm_hits: dict[str, dict[str, int]] = {f: {} for f in self.families}

    def observe(self, result: SeedResult, focus: str | None = None) -> None:
        """A seed's result; `focus`: the family of a focus seed (None for the run's own seeds)."""
        self.seeds += 1
        for path in result.coverage:
            if path not in self.path_seeds:  # lenient: a path the system did not declare
                self.paths.append(path)
                self.path_seeds[path] = 0
            self.path_seeds[path] += 1
        if focus is None:
            return
        self.focus_seeds += 1
        self.focus_failures += result.status == "failed"
        if focus not in self.arm_runs:
            self.families.append(focus)
            self.arm_runs[focus] = 0
            self.arm_hits[focus] = {}
        self.arm_runs[focus] += 1
        hits = self.arm_hits[focus]
        for path in result.coverage:
            hits[path] = hits.get(path, 0) + 1

    def rarest_path(self) -> str | None:
        """The path exercised by the fewest seeds, among those exercised at all (a path no seed
        reached may be unreachable in a correct system: it is shown, not chased)."""
        seen = [path for path in self.paths if self.path_seeds[path]]
        if not seen:
            return None
        return min(seen, key=lambda path: self.path_seeds[path])  # first of equals wins

    def choose_focus(self) -> str | None:
        """The family the next focus seed focuses on (None: no families). Without a target path
        yet (no coverage reported), the family with the fewest focus seeds."""
        if not self.families:
            return None
        target = self.rarest_path()
        total = sum(self.arm_runs.values())

        def score(family: str) -> float:
            runs = self.arm_runs[family]
            if runs == 0:
                return math.inf  # try every family once
            if target is None:
                return -runs
            mean = self.arm_hits[family].get(target, 0) / runs
            return mean + math.sqrt(2.0 * math.log(total) / runs)

        return max(self.families, key=score)  # first of equals wins

    def status(self, current: str | None) -> CoverageStatus:
        return CoverageStatus(
            seeds=self.seeds,
            paths={path: self.path_seeds[path] for path in self.paths},
            rarest=self.rarest_path(),
            focus_seeds=self.focus_seeds,
            focus_failures=self.focus_failures,
            focus_current=current,
            focus_arms=[
                FocusArm(family=family, seeds=self.arm_runs[family],
                         paths=dict(sorted(self.arm_hits[family].items())))
                for family in self.families
            ],
        )


class BoundTally:
    def __init__(self) -> None:
        # configuration -> seeds seen with it; (bound, configuration) -> [count, first, last].
        self.config_seeds: dict[str, int] = {}
        self.reached: dict[tuple[str, str], list[int]] = {}

    def observe(self, seed: int, config: str, bounds: Iterable[str]) -> None:
        if config not in self.config_seeds and len(self.config_seeds) >= CONFIGS_TRACKED_MAX:
            return
        self.config_seeds[config] = self.config_seeds.get(config, 0) + 1
        for bound in bounds:
            entry = self.reached.get((bound, config))
            if entry is None:
                self.reached[(bound, config)] = [1, seed, seed]
            else:
                entry[0] += 1
                entry[1] = min(entry[1], seed)
                entry[2] = max(entry[2], seed)

    def recurring(self) -> list[BoundRecurrence]:
        """Bounds reached by at least RECUR_SEEDS_MIN seeds of one configuration, most first."""
        rows = [
            BoundRecurrence(bound=bound, config=config, seeds=count,
                            config_seeds=self.config_seeds[config], first_seed=first,
                            last_seed=last)
            for (bound, config), (count, first, last) in self.reached.items()
            if count >= RECUR_SEEDS_MIN
        ]
        rows.sort(key=lambda row: (-row.seeds, row.bound, row.config))
        return rows[:RECURRING_SHOWN_MAX]


class SeedSource(Protocol):
    """What the supervisor draws seeds from (`voprd.service.supervisor.SeedSource`)."""

    def dispatch(self, count_max: int) -> list[int]: ...

    def requeue(self, seeds: list[int]) -> None: ...

    @property
    def dispatch_exhausted(self) -> bool: ...


class FocusSource:
    """The run's own seeds (`inner`, e.g. `RunProgress`), and after every `every` of them one
    focus seed: `focus_seed(family, serial)` with the family `tally.choose_focus()` picks and the
    serial of the run's seed it follows (unique in the run). Focus seeds are extra: they are
    never part of the run's exact progress (watermark, journal, checkpoint), so the run's seeds
    keep their meaning and resume exactly; a restart may run a focus seed again, or not at all.
    A batch may hold up to count_max // every + 1 seeds more than asked for."""

    def __init__(self, inner: SeedSource, tally: CoverageTally, every: int) -> None:
        assert every >= 1
        self.inner = inner
        self.tally = tally
        self.every = every
        self.current: str | None = None
        self._since = 0
        self._requeued: list[int] = []
        # Focus seeds dispatched and not yet taken back (`take`), with their family: a seed is a
        # focus seed because this source made it one, not by its number (a run may start
        # anywhere in the u64 seed space, the focus space included).
        self._outstanding: dict[int, str] = {}

    def dispatch(self, count_max: int) -> list[int]:
        seeds = self._requeued[:count_max]
        del self._requeued[:count_max]
        for seed in self.inner.dispatch(count_max - len(seeds)):
            seeds.append(seed)
            self._since += 1
            # A run inside the focus space itself gets no focus seeds (they could be its own).
            if self._since >= self.every and not is_focus_seed(seed):
                self._since = 0
                family = self.tally.choose_focus()
                if family is not None:
                    self.current = family
                    extra = focus_seed(family, seed)
                    self._outstanding[extra] = family
                    seeds.append(extra)
        return seeds

    def requeue(self, seeds: list[int]) -> None:
        self._requeued.extend(seed for seed in seeds if seed in self._outstanding)
        self.inner.requeue([seed for seed in seeds if seed not in self._outstanding])

    def take(self, seed: int) -> str | None:
        """The family of focus seed `seed` whose result came back (None: a seed of the run)."""
        return self._outstanding.pop(seed, None)

    @property
    def dispatch_exhausted(self) -> bool:
        return not self._requeued and self.inner.dispatch_exhausted
