"""The simulator's linearizability check: every seed's client history against its system's model.

Registered in `voprd.sim.run.HISTORY_CHECKS`. The budget is a step count, never wall time, so the
verdict is a function of the seed alone (a loaded machine cannot turn a pass into `unknown`).
Verdicts map to failures as follows:
- `not_linearizable` -> invariant `linearizability`, the checker's explanation as the message;
  also an operation the model cannot give at all (a get that returned a boolean);
- `unknown` (step budget exhausted) -> invariant `linearizability_unknown`: reported as a failure
  (kind `invariant`) so it is archived, alerted and reproducible, never counted as a pass.
"""

from __future__ import annotations

from voprd.check.checker import check_history
from voprd.check.formats import HistoryOpError
from voprd.check.history import HistoryOp
from voprd.check.models import Model

# Simulator histories need a few hundred steps (436 at most over seeds 0..99, `--faults all`);
# refuting a planted bug needs a few thousand. One million steps is seconds of CPU at worst.
LINEARIZABILITY_STEPS_MAX = 1_000_000
INVARIANT = "linearizability"
INVARIANT_UNKNOWN = "linearizability_unknown"


def check_linearizability(history: list[HistoryOp], model: Model) -> tuple[str, str] | None:
    """None if `history` is linearizable under `model`; else (invariant, message) as above."""
    try:
        verdict = check_history(
            history, model=model, budget_ms=None, max_steps=LINEARIZABILITY_STEPS_MAX
        )
    except HistoryOpError as error:
        # An operation no execution of the model gives (e.g. a get that returned a cas's
        # boolean, from a reply meant for another request): not linearizable.
        return INVARIANT, (
            f"the history has an operation the model cannot give: line {error.line}: {error}"
        )
    if verdict.verdict == "linearizable":
        return None
    if verdict.verdict == "not_linearizable":
        assert verdict.explanation, "a refutation comes with an explanation"
        return INVARIANT, verdict.explanation
    assert verdict.verdict == "unknown"
    return INVARIANT_UNKNOWN, (
        f"linearizability undecided: the search exhausted its budget of "
        f"{LINEARIZABILITY_STEPS_MAX:,} steps ({verdict.ops} operations); the history is neither "
        f"accepted nor refuted"
    )
