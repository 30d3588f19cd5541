"""voprd.check: linearizability checking (search, models, history formats).

`check_history(ops, model="kv", budget_ms=..., max_steps=None) -> Verdict` is the entry point
for the simulator; `voprd lincheck` (voprd.check.cli) checks files.
"""

from voprd.check.checker import Verdict, check_history, check_operations

__all__ = ["Verdict", "check_history", "check_operations"]
