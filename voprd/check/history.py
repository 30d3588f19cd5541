"""voprd's own client-history format (JSON lines, one operation per line).

Written by the simulator (`voprd --once --seed N --history-file F`), read by `voprd lincheck` and
the checker (`voprd.check.formats.parse_voprd`, `voprd.check.check_history`). Each line is one
`HistoryOp` (JSON object, fields in any order; defaults may be omitted):

- `process`: the client id; each process has at most one operation open at a time.
- `op`: `get`, `put`, `append` or `cas` (kv model); `read`, `write`, `cas` (register model).
- `key`: the key (`""` for the single-register model). Keys are checked independently.
- `value`: the argument of put/append/write, the new value of cas; null otherwise (required for
  put/append/write/cas).
- `expected`: the expected value of cas (required for cas); null otherwise.
- `call_us`: simulated time of the call, microseconds.
- `return_us`: simulated time of the return (>= `call_us`), or null when the outcome is unknown
  (timed out or still pending when the run ended): such an operation may take effect at any time
  after its call, or never.
- `output`: for get/read the value returned (null: no value; the kv model reads it as `""`);
  for cas `true`/`false` (null with a `return_us`: outcome unknown, treated like a null
  `return_us`); null for put/append/write. A get/read with null `return_us` constrains nothing.

Times: events at the same microsecond are ordered calls first, so operations that merely touch
in time count as concurrent (the permissive reading, as Porcupine does). Line numbers in
explanations are the lines of the file (or 1-based indices for `check_history`).

The kv model's state per key is a string, initially empty (`""`), as in Porcupine's kv model:
get returns it, put sets it, append concatenates, cas swaps when it equals `expected`.
"""

from __future__ import annotations

from typing import Literal

import msgspec

OpName = Literal["get", "put", "append", "cas", "read", "write"]


def op_text(op: str, key: str, value: str | None, expected: str | None) -> str:
    """An operation as text: get(k), read(k), put(k, 'v'), cas(k, 'old'->'new')."""
    if op in ("get", "read"):
        return f"{op}({key})"
    if op == "cas":
        return f"cas({key}, {expected!r}->{value!r})"
    return f"{op}({key}, {value!r})"


class HistoryOp(msgspec.Struct, kw_only=True, omit_defaults=True):
    process: int
    op: OpName
    key: str = ""
    value: str | None = None
    expected: str | None = None
    call_us: int
    return_us: int | None = None
    output: str | bool | None = None
