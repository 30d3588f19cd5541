"""Check a whole history: split it into independent parts, search them fairly, explain refutations.

P-compositionality: the model's `partition` splits the history (per key); it is linearizable iff
every part is. Parts are searched round-robin in slices of steps that double each round (up to a
cap), smallest parts first, so one hard part cannot starve the verdict: a history is refuted as
soon as any part is, and accepted once all parts are.

Budgets: `max_steps` (total search steps over all parts; deterministic) and `budget_ms` (wall
clock, checked between slices; the only non-deterministic input, and it can only turn a verdict
into `unknown`). Exceeding either gives the verdict `unknown`, never a hang.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

import msgspec

from voprd.check.history import HistoryOp
from voprd.check.models import Model, Operation, get_model
from voprd.check.search import SearchGen, SearchOutcome, fast_search, plain_search

VerdictName = Literal["linearizable", "not_linearizable", "unknown"]
SLICE_STEPS_FIRST = 512
SLICE_STEPS_MAX = 16_384
DEFAULT_BUDGET_MS = 10_000.0
PREFIX_SHOWN_MAX = 8


class Verdict(msgspec.Struct, kw_only=True):
    verdict: VerdictName
    ops: int
    elapsed_ms: float
    explanation: str = ""
    steps: int = 0
    # Keys (parts) proven non-linearizable; the search stops at the first one found.
    failing_keys: list[str] = msgspec.field(default_factory=list)


class ModelMismatchError(ValueError):
    """An operation the chosen model does not define."""


def validate_ops(model: Model, ops: Sequence[Operation]) -> None:
    for op in ops:
        if op.f not in model.op_names:
            raise ModelMismatchError(
                f"line {op.line}: operation {op.f!r} is not part of the {model.name} model "
                f"(it has {', '.join(sorted(model.op_names))})"
            )


def check_operations(
    ops: Sequence[Operation],
    model: Model,
    *,
    budget_ms: float | None = DEFAULT_BUDGET_MS,
    max_steps: int | None = None,
    plain: bool = False,
    prunings: dict[str, bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Verdict:
    """Decide linearizability of `ops` under `model` within the budgets. `plain` selects
    Porcupine's search; `prunings` switches fast-search refinements off (for measurements)."""
    if budget_ms is None and max_steps is None:
        raise ValueError("a check needs a budget: budget_ms and/or max_steps")
    validate_ops(model, ops)
    started = clock()
    deadline = None if budget_ms is None else started + budget_ms / 1000.0
    parts = sorted(model.partition(ops), key=len)
    flags = prunings or {}

    def search(model: Model, part: Sequence[Operation], step_limit: int) -> SearchGen:
        if plain:
            return plain_search(model, part, step_limit)
        return fast_search(model, part, step_limit, **flags)

    running: list[tuple[list[Operation], SearchGen, int]] = []
    steps_total = 0
    slice_steps = SLICE_STEPS_FIRST
    if max_steps is not None:
        slice_steps = max(1, min(slice_steps, max_steps // max(1, len(parts))))
    for part in parts:
        running.append((part, search(model, part, slice_steps), 0))
    verdict: VerdictName = "linearizable"
    explanation = ""
    failing: list[str] = []
    rounds_max = 1 << 40  # explicit bound; the budgets end the loop long before
    for _round in range(rounds_max):
        if not running:
            break
        still: list[tuple[list[Operation], SearchGen, int]] = []
        for part, gen, used in running:
            outcome: SearchOutcome | None = None
            try:
                used = gen.send(used + slice_steps) if used else next(gen)
            except StopIteration as stop:
                outcome = stop.value
            if outcome is None:
                still.append((part, gen, used))
                continue
            steps_total += outcome.steps
            if not outcome.linearizable:
                verdict = "not_linearizable"
                failing = [part[0].key] if part else []
                explanation = explain(model, part, outcome)
                break
        if verdict == "not_linearizable":
            break
        running = still
        slice_steps = min(slice_steps * 2, SLICE_STEPS_MAX)
        spent = steps_total + sum(used for _p, _g, used in running)
        over_steps = max_steps is not None and spent >= max_steps
        if max_steps is not None and running:
            slice_steps = max(1, min(slice_steps, (max_steps - spent) // len(running)))
        over_time = deadline is not None and clock() >= deadline
        if running and (over_steps or over_time):
            verdict = "unknown"
            budget = f"{max_steps} steps" if over_steps else f"{budget_ms:g} ms"
            keys = ", ".join(repr(part[0].key) for part, _g, _u in running[:5])
            explanation = (
                f"search budget exhausted ({budget}) with {len(running)} of {len(parts)} "
                f"part(s) undecided (keys {keys})"
            )
            steps_total = spent
            break
    for _part, gen, _used in running:
        gen.close()
    elapsed_ms = (clock() - started) * 1000.0
    return Verdict(
        verdict=verdict, ops=len(ops), elapsed_ms=round(elapsed_ms, 3), explanation=explanation,
        steps=steps_total, failing_keys=failing,
    )


def explain(model: Model, part: Sequence[Operation], outcome: SearchOutcome) -> str:
    """Human text: the longest linearizable prefix found and the operation that cannot follow."""
    key = part[0].key if part else ""
    lines = [
        f"key {key!r}: not linearizable; longest linearizable prefix found has "
        f"{len(outcome.prefix)} of {len(part)} operations"
    ]
    shown = outcome.prefix[-PREFIX_SHOWN_MAX:]
    if len(shown) < len(outcome.prefix):
        lines.append(f"  ... {len(outcome.prefix) - len(shown)} earlier operations")
    for index in shown:
        lines.append(f"  {_describe(model, part[index])}")
    if outcome.blocker is not None:
        lines.append(
            f"then cannot linearize {_describe(model, part[outcome.blocker])} "
            f"(state after the prefix: {model.describe_state(outcome.blocker_state)})"
        )
    if outcome.reason is not None:
        lines.append(
            f"  because afterwards {_describe(model, part[outcome.reason])} could never be "
            f"linearized"
        )
    return "\n".join(lines)


def _describe(model: Model, op: Operation) -> str:
    return f"line {op.line} process {op.process}: {model.describe(op)}"


def check_history(
    ops: Sequence[HistoryOp],
    model: str | Model = "kv",
    budget_ms: float | None = DEFAULT_BUDGET_MS,
    max_steps: int | None = None,
) -> Verdict:
    """Check a voprd history (as the simulator records it). Line numbers in explanations are
    1-based indices into `ops`. For a fully deterministic verdict pass `budget_ms=None` and a
    `max_steps` bound. Raises ValueError on a malformed op or one outside the model.
    """
    from voprd.check.formats import from_history_ops

    operations = from_history_ops(enumerate(ops, start=1))
    chosen = get_model(model) if isinstance(model, str) else model
    return check_operations(operations, chosen, budget_ms=budget_ms, max_steps=max_steps)
