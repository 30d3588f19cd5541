"""The pure core of coverage: path tallies, the focus bandit, recurring bounds, focus seeds
interleaved with a run's exact progress."""

from __future__ import annotations

from voprd.core.coverage import (
    RECUR_SEEDS_MIN,
    BoundTally,
    CoverageTally,
    FocusSource,
)
from voprd.core.progress import RunProgress
from voprd.core.records import JournalRecord, RunFingerprint
from voprd.events import SeedResult
from voprd.sim.faults import focus_seed, is_focus_seed, seed_focus

PATHS = ("view_change", "recovery", "repair")
FAMILIES = ("network", "crash", "storage", "clock")


def result(seed: int, *paths: str, status: str = "ok", config: str = "c",
           bounds: tuple[str, ...] = ()) -> SeedResult:
    return SeedResult(seed=seed, status=status,  # type: ignore[arg-type]
                      coverage=dict.fromkeys(paths, 1), config=config,
                      bounds_reached=list(bounds))


def test_paths_are_counted_per_seed_and_the_rarest_exercised_one_is_the_target() -> None:
    tally = CoverageTally(PATHS, FAMILIES)
    assert tally.rarest_path() is None
    for seed in range(10):
        tally.observe(result(seed, "view_change", "repair"))
    tally.observe(result(10, "repair", "recovery"))
    assert tally.path_seeds == {"view_change": 10, "recovery": 1, "repair": 11}
    assert tally.rarest_path() == "recovery"
    tally.observe(result(11, "surprise"))  # undeclared: counted all the same
    assert tally.path_seeds["surprise"] == 1
    status = tally.status(None)
    assert status.seeds == 12 and status.paths["recovery"] == 1 and status.focus_seeds == 0


def test_the_bandit_tries_every_family_then_prefers_the_one_that_reaches_the_rare_path() -> None:
    tally = CoverageTally(PATHS, FAMILIES)
    for seed in range(20):
        tally.observe(result(seed, "view_change", "repair"))
    tally.observe(result(20, "recovery"))  # the rare path
    chosen: list[str] = []
    for serial in range(200):
        family = tally.choose_focus()
        assert family is not None
        chosen.append(family)
        # Every focus seed has view changes and repairs; only storage's reach recovery (often).
        hit = family == "storage" and serial % 2 == 0
        paths = ["view_change", "repair", *(["recovery"] if hit else [])]
        tally.observe(result(focus_seed(family, serial), *paths), focus=family)
    assert set(chosen[:4]) == set(FAMILIES)  # each tried once first
    assert chosen[100:].count("storage") > 70
    status = tally.status("storage")
    assert status.focus_seeds == 200 and status.focus_current == "storage"
    assert {arm.family: arm.seeds for arm in status.focus_arms}["storage"] == chosen.count(
        "storage")


def test_without_coverage_the_focus_goes_round_robin() -> None:
    tally = CoverageTally((), FAMILIES)
    chosen = []
    for serial in range(8):
        family = tally.choose_focus()
        assert family is not None
        chosen.append(family)
        tally.observe(result(focus_seed(family, serial)), focus=family)
    assert sorted(chosen) == sorted(FAMILIES * 2)
    assert CoverageTally(PATHS, ()).choose_focus() is None


def test_a_bound_recurs_per_configuration() -> None:
    tally = BoundTally()
    for seed in range(RECUR_SEEDS_MIN - 1):
        tally.observe(seed, "a", ["safety_time_limit"])
    tally.observe(50, "b", ["safety_time_limit"])
    assert tally.recurring() == []  # 2 in config a, 1 in config b: not yet
    tally.observe(7, "a", ["safety_time_limit", "log_ops"])
    tally.observe(8, "a", [])
    (row,) = tally.recurring()
    assert (row.bound, row.config, row.seeds, row.config_seeds) == (
        "safety_time_limit", "a", RECUR_SEEDS_MIN, RECUR_SEEDS_MIN + 1)
    assert (row.first_seed, row.last_seed) == (0, 7)


def _progress(end_seed: int | None, first_seed: int = 0) -> RunProgress:
    fingerprint = RunFingerprint(first_seed=first_seed, target="builtin", exec_cmd=None,
                                 faults=(), max_events=1000, bugs=(), check_determinism=False,
                                 voprd_version="0")
    return RunProgress(run_id="r", fingerprint=fingerprint, end_seed=end_seed)


def test_focus_seeds_interleave_without_touching_the_exact_progress() -> None:
    progress = _progress(end_seed=40)
    tally = CoverageTally(PATHS, FAMILIES)
    source = FocusSource(progress, tally, every=4)
    dispatched: list[int] = []
    while not source.dispatch_exhausted:
        dispatched += source.dispatch(6)
    main = [seed for seed in dispatched if not is_focus_seed(seed)]
    focus = [seed for seed in dispatched if is_focus_seed(seed)]
    assert main == list(range(40)) and len(focus) == 10
    # One after every 4 seeds of the run, named after the seed it follows.
    assert dispatched[4] == focus[0] and focus[0] & 0xFF == 3
    assert all(seed_focus(seed) in FAMILIES for seed in focus)
    # A worker that died with seeds assigned: the run's seeds go back to the progress, focus
    # seeds are dispatched again first.
    source.requeue([focus[0], 5])
    assert not source.dispatch_exhausted
    again = source.dispatch(10)
    assert again == [focus[0], 5]
    # Results name their focus family once; the run's own seeds are not focus seeds.
    assert source.take(focus[0]) == seed_focus(focus[0]) and source.take(focus[0]) is None
    assert source.take(5) is None
    for seed in main:
        progress.record(JournalRecord(seed=seed, failed=False))
    assert progress.watermark == 40 and progress.total_iterations == 40


def test_a_run_inside_the_focus_space_gets_no_focus_seeds() -> None:
    """Seeds are u64 everywhere: a run may start at or above the focus space (2^62). Its seeds
    are its own (never taken for focus seeds, so they count in its progress) and no focus seed
    is added that could be one of them."""
    first = focus_seed(FAMILIES[0], 0)
    progress = _progress(end_seed=first + 20, first_seed=first)
    source = FocusSource(progress, CoverageTally(PATHS, FAMILIES), every=4)
    dispatched: list[int] = []
    while not source.dispatch_exhausted:
        dispatched += source.dispatch(6)
    assert dispatched == list(range(first, first + 20))
    assert all(source.take(seed) is None for seed in dispatched)
