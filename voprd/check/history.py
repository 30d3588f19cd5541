"""voprd's own client-history format (JSON lines, one operation per line).

Written by the simulator (`--history-file`), read by `voprd lincheck` and the checker.
Each line is one `HistoryOp`:

- `process`: the client id; each process has at most one operation open at a time.
- `op`: `get`, `put`, `append` or `cas` (kv model); `read`, `write`, `cas` (register model).
- `key`: the key (`""` for the single-register model).
- `value`: the argument of put/append/write, the new value of cas; null otherwise.
- `expected`: the expected value of cas; null otherwise.
- `call_us`: simulated time of the call, microseconds.
- `return_us`: simulated time of the return, or null when the outcome is unknown (timed out or
  still pending when the run ended): such an operation may take effect at any time after its call,
  or never.
- `output`: for get/read the value returned (null: no value); for cas `true`/`false`; null for
  put/append/write and for unknown outcomes.

The kv model's state per key is a string, initially empty (`""`), as in Porcupine's kv model.
"""

from __future__ import annotations

from typing import Literal

import msgspec

OpName = Literal["get", "put", "append", "cas", "read", "write"]


class HistoryOp(msgspec.Struct, kw_only=True, omit_defaults=True):
    process: int
    op: OpName
    key: str = ""
    value: str | None = None
    expected: str | None = None
    call_us: int
    return_us: int | None = None
    output: str | bool | None = None
