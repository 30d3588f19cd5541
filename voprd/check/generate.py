"""Random register and kv histories with a known verdict, for tests and benchmarks.

`register_history` simulates an atomic register: each operation takes effect at a random point
inside its interval, in the order of those points, so the history is linearizable by
construction. Timed-out operations have an unknown outcome (a timed-out write/cas took effect or
not, at random; its process then moves on under a fresh id, as in Jepsen). `stale_read` turns a
history into one that is provably not linearizable. All randomness comes from the given
`random.Random`, so a seed reproduces a history.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from voprd.check.models import Operation, Value


def _positions(intervals: list[tuple[float, float]]) -> dict[tuple[int, int], int]:
    """Distinct integer positions for (op index, 0 call / 1 return) in time order."""
    times = [(t, kind, index) for index, pair in enumerate(intervals)
             for kind, t in enumerate(pair)]
    return {(index, kind): pos for pos, (_t, kind, index) in enumerate(sorted(times), start=1)}


def register_history(
    rng: random.Random,
    *,
    processes: int,
    ops: int,
    values: int,
    timeout_percent: int = 10,
    key: str = "",
) -> list[Operation]:
    """A linearizable register history: `processes` clients, `ops` operations, values 0..N-1."""
    assert processes >= 1 and ops >= 0 and values >= 1
    free_at = [rng.random() for _ in range(processes)]
    process_id = list(range(processes))
    next_id = processes
    # (call time, return time or None, point, f, value, expected, process, timed_out, applied)
    drafts: list[tuple[float, float, float, str, Value | None, Value | None, int, bool, bool]] = []
    for _ in range(ops):
        slot = min(range(processes), key=lambda p: free_at[p])
        call = free_at[slot] + rng.random() * 0.5
        end = call + 0.05 + rng.random() * 3.0
        point = call + (end - call) * rng.random()
        f = rng.choice(("read", "read", "write", "cas"))
        value: Value | None = rng.randrange(values) if f != "read" else None
        expected: Value | None = rng.randrange(values) if f == "cas" else None
        timed_out = rng.randrange(100) < timeout_percent
        applied = not timed_out or rng.random() < 0.5
        drafts.append((call, end, point, f, value, expected, process_id[slot], timed_out, applied))
        free_at[slot] = end
        if timed_out:
            process_id[slot] = next_id
            next_id += 1
    outputs: list[Value | bool | None] = [None] * len(drafts)
    state: Value | None = None  # the register's value
    for index in sorted(range(len(drafts)), key=lambda i: drafts[i][2]):
        _c, _r, _p, f, value, expected, _proc, _timed_out, applied = drafts[index]
        if not applied:
            continue
        if f == "read":
            outputs[index] = state
        elif f == "write":
            state = value
        else:
            outputs[index] = state == expected
            if state == expected:
                state = value
    position = _positions([(draft[0], draft[1]) for draft in drafts])
    result: list[Operation] = []
    for index, (_c, _r, _p, f, value, expected, proc, timed_out, _a) in enumerate(drafts):
        unknown = timed_out
        ret: int | None = position[(index, 1)]
        if unknown and f != "read":
            ret = None
        result.append(Operation(
            process=proc, f=f, key=key, value=value, expected=expected,
            output=None if unknown else outputs[index], unknown=unknown,
            call=position[(index, 0)], ret=ret, line=index + 1,
        ))
    return result


def _produces(op: Operation, value: Value | None) -> bool:
    if op.f == "write":
        return op.value == value
    if op.f == "cas":
        return op.value == value and (op.unknown or op.output is True)
    return False


def stale_read(rng: random.Random, ops: Sequence[Operation]) -> list[Operation] | None:
    """A copy where one read returns a value that was provably overwritten before it began.

    Read r gets output v when some known write w (returned before r's call) follows, in real
    time, every operation that could produce v (each returned before w's call, none unknown;
    for v = None the initial state counts as such a producer). Any linearization puts w after
    all producers of v and before r, with no producer of v in between: r cannot read v.
    Returns None when the history has no such read.
    """
    reads = [i for i, op in enumerate(ops) if op.f == "read" and not op.unknown]
    rng.shuffle(reads)
    candidates = sorted({op.value for op in ops if op.value is not None}, key=repr)
    for index in reads:
        read = ops[index]
        writes = [w for w in ops if w.f == "write" and not w.unknown and w.ret is not None
                  and w.ret < read.call]
        for stale in [None, *candidates]:
            if stale == read.output:
                continue
            producers = [op for op in ops if _produces(op, stale)]
            if any(op.ret is None for op in producers):
                continue
            for w in writes:
                if w.value != stale and all(
                    op.ret is not None and op.ret < w.call for op in producers
                ):
                    copy = list(ops)
                    copy[index] = Operation(
                        process=read.process, f="read", key=read.key, output=stale,
                        call=read.call, ret=read.ret, line=read.line,
                    )
                    return copy
    return None


def kv_history(
    rng: random.Random, *, processes: int, ops: int, keys: int, timeout_percent: int = 10
) -> list[Operation]:
    """A linearizable kv history (get/put/append on `keys` keys), built like `register_history`."""
    free_at = [rng.random() for _ in range(processes)]
    drafts: list[tuple[float, float, float, str, str, str | None, int, bool, bool]] = []
    for serial in range(ops):
        slot = min(range(processes), key=lambda p: free_at[p])
        call = free_at[slot] + rng.random() * 0.5
        end = call + 0.05 + rng.random() * 3.0
        point = call + (end - call) * rng.random()
        f = rng.choice(("get", "get", "append", "append", "put"))
        key = str(rng.randrange(keys))
        value = None if f == "get" else f"x{slot}.{serial} "
        timed_out = rng.randrange(100) < timeout_percent
        applied = not timed_out or rng.random() < 0.5
        drafts.append((call, end, point, f, key, value, slot, timed_out, applied))
        free_at[slot] = end
    state: dict[str, str] = {}
    outputs: list[str | None] = [None] * len(drafts)
    for index in sorted(range(len(drafts)), key=lambda i: drafts[i][2]):
        _c, _r, _p, f, key, value, _s, _t, applied = drafts[index]
        if not applied:
            continue
        if f == "get":
            outputs[index] = state.get(key, "")
        elif f == "put":
            state[key] = str(value)
        else:
            state[key] = state.get(key, "") + str(value)
    position = _positions([(draft[0], draft[1]) for draft in drafts])
    result: list[Operation] = []
    for index, (_c, _r, _p, f, key, value, slot, timed_out, _a) in enumerate(drafts):
        ret: int | None = position[(index, 1)]
        if timed_out and f != "get":
            ret = None
        result.append(Operation(
            process=slot, f=f, key=key, value=value, output=None if timed_out else outputs[index],
            unknown=timed_out, call=position[(index, 0)], ret=ret, line=index + 1,
        ))
    return result
