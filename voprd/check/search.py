"""Linearizability search for one independent sub-history (one key).

Two searches over the same input (a list of `Operation`s with distinct `call`/`ret` positions):

`plain_search`: Wing & Gong's search as improved by Lowe, exactly Porcupine's algorithm: a
doubly linked list of call and return entries in time order; walking it from the head, a call
whose operation the model allows is linearized (its call and return are lifted out of the list)
and the walk restarts; reaching a return entry means that operation cannot be placed, so the
search backtracks. A cache of (bitset of linearized operations, state) pairs, tried once each,
keeps it from exploring a configuration twice. Operations that never returned get a return entry
after every other event (in call order), as Porcupine does. It is the reference the randomised
tests hold the fast search to, and the baseline of the benchmarks.

`fast_search`: the same search with these sound refinements (each can be switched off for tests):

0. Unknown outcomes (`ret is None`) are optional. Such an operation is legal in every state
   (model contract), and its return is after every other event, so in any linearization of the
   others it can be placed after everything (= never takes effect) without breaking a real-time
   constraint. Hence a configuration in which every operation that did return is linearized is a
   success; optional operations are tried only as extra candidates (when their call precedes the
   first pending return), never required. Unknown-output read-only operations are dropped:
   inserting one anywhere in its interval never changes a state or a constraint.

(a) `prune_readonly`. If an unlinearized operation r is read-only (never changes the state
   where legal), is legal in the current state s, and its call precedes every pending return
   (it is a candidate), then if any linearization extends the current configuration, one extends
   it with r first. Proof: take the extension o1 ... ok r ...; move r to the front. r is legal in
   s and leaves s unchanged, so o1..ok see the same states and stay legal; the operations after
   r are unaffected. Real time: moving r earlier can only break "oi precedes r" for oi with
   return before r's call, but r is a candidate, so no pending operation returns before r's call.
   So r is linearized without alternatives; if that fails, the configuration fails.

(b) `prune_symmetric`. Operations a and b with identical input and output (same function,
   arguments, recorded output), with call(a) < call(b) and ret(a) < ret(b) are interchangeable:
   in any valid linearization with b before a, swapping them keeps every state (same step on the
   same states) and every real-time constraint (anything that must precede a returns before
   call(a) < call(b); anything that must follow b calls after ret(b) > ret(a); the others were
   already on the right side). Swapping inverted pairs lowers the number of inversions in call
   order, so a linearization with a before b for every such pair exists whenever any does. The
   search therefore only linearizes b once every such a is linearized. Configurations reached
   this way are closed under the rule, and every extension of a closed configuration can be put
   in this canonical order, so a cached "no canonical extension" still means "no extension".
   Unknown operations all return at the end in call order, so identical ones always qualify.

(c) `prune_bound`. A model-specific bound (see `voprd.check.models`): if no unlinearized
   resetting operation that `helps` r has a call before the return of a pending read-only
   operation r, then r can only become legal in a state that extends the current one: the last
   reset before r (if any) must help r, else the state after it (and its forward moves) never
   makes r legal; no helping reset can still run before r returns; so every op between now
   and r moves the state forward. If `may_reach(s, r)` is False, r can never be placed: the
   configuration is dead. The same argument prunes a candidate that only moves the state
   forward (not a reset) when it makes such a pending r unreachable (`target` below). For the kv
   model: with no put/cas left that could run first, a get must return a string that starts
   with the current state; for the register: with no write/cas left, a read must match now.

Both searches are generators: they yield when their step count reaches the limit they were last
sent (or were started with) and return a `SearchOutcome`. The caller schedules several parts by
resuming them with growing limits; a search never runs unboundedly without yielding.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import msgspec

from voprd.check.models import ILLEGAL, Model, Operation

SearchGen = Generator[int, int, "SearchOutcome"]


class SearchOutcome(msgspec.Struct, kw_only=True):
    linearizable: bool
    steps: int
    # For a refutation: indices (into the part's op list) of the longest linearizable prefix the
    # search found, the operation that could not be placed after it, and the state there.
    prefix: list[int] = msgspec.field(default_factory=list)
    blocker: int | None = None
    blocker_state: Any = None
    # When bound (c) excluded the blocker: the pending read it would have made unreachable.
    reason: int | None = None


def _event_order(ops: Sequence[Operation]) -> list[tuple[int, int, int]]:
    """(time, kind, op index) of every event of the returning ops; kind 0 call, 1 return."""
    events: list[tuple[int, int, int]] = []
    for index, op in enumerate(ops):
        events.append((op.call, 0, index))
        if op.ret is not None:
            assert op.ret > op.call, f"operation returns before its call: {op}"
            events.append((op.ret, 1, index))
    events.sort()
    return events


def _linked_entries(
    events: Sequence[tuple[int, int, int]], count: int
) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    """The doubly linked list of entries: ids 0 (head), 1..len(events) in the given order, and a
    tail; entry_op[e] is the op index of a call entry and ~index of a return entry."""
    entry_op: list[int] = [0]
    call_entry = [0] * count
    ret_entry = [0] * count
    for _time, kind, index in events:
        if kind == 0:
            call_entry[index] = len(entry_op)
            entry_op.append(index)
        else:
            ret_entry[index] = len(entry_op)
            entry_op.append(~index)
    tail = len(entry_op)
    entry_op.append(0)
    nxt = [*range(1, tail + 1), tail]
    prv = [0, *range(0, tail)]
    return entry_op, call_entry, ret_entry, nxt, prv


def plain_search(model: Model, ops: Sequence[Operation], step_limit: int) -> SearchGen:
    """Porcupine's algorithm, no pruning. Indices in the outcome refer to `ops`."""
    count = len(ops)
    pending = [i for i in sorted(range(count), key=lambda i: ops[i].call) if ops[i].ret is None]
    events = _event_order(ops)
    end_events = [(0, 1, i) for i in pending]
    entry_op, call_entry, ret_entry, nxt, prv = _linked_entries(events + end_events, count)
    tail = len(entry_op) - 1
    fns = [model.compile(op) for op in ops]
    state: Any = model.init()
    linearized = 0
    cache: set[tuple[int, Any]] = set()
    stack: list[tuple[int, Any]] = []
    steps = 0
    best: list[int] = []
    blocker: int | None = None
    blocker_state: Any = None
    entry = nxt[0]
    while entry != tail:
        x = entry_op[entry]
        if x >= 0:
            new_state = fns[x](state)
            if new_state is not ILLEGAL:
                key = (linearized | (1 << x), new_state)
                if key not in cache:
                    steps += 1
                    if steps >= step_limit:
                        step_limit = yield steps
                    cache.add(key)
                    stack.append((x, state))
                    state = new_state
                    linearized = key[0]
                    c, r = entry, ret_entry[x]
                    nxt[prv[c]] = nxt[c]
                    prv[nxt[c]] = prv[c]
                    nxt[prv[r]] = nxt[r]
                    prv[nxt[r]] = prv[r]
                    entry = nxt[0]
                    continue
            entry = nxt[entry]
            continue
        # A return entry: the operation ~x cannot be placed in this configuration.
        if len(stack) > len(best) or blocker is None:
            best = [frame[0] for frame in stack]
            blocker, blocker_state = ~x, state
        if not stack:
            return SearchOutcome(
                linearizable=False, steps=steps, prefix=best, blocker=blocker,
                blocker_state=blocker_state,
            )
        steps += 1
        x, state = stack.pop()
        linearized &= ~(1 << x)
        c, r = call_entry[x], ret_entry[x]
        prv[nxt[r]] = r
        nxt[prv[r]] = r
        prv[nxt[c]] = c
        nxt[prv[c]] = c
        entry = nxt[c]
    return SearchOutcome(linearizable=True, steps=steps, prefix=[frame[0] for frame in stack])


def _identity(op: Operation) -> tuple[Any, ...]:
    return (op.f, op.key, op.value, op.expected, op.output, op.unknown, op.ret is None)


def fast_search(
    model: Model,
    ops: Sequence[Operation],
    step_limit: int,
    *,
    prune_readonly: bool = True,
    prune_symmetric: bool = True,
    prune_bound: bool = True,
    lookahead: int = 16,
) -> SearchGen:
    """The refined search (see the module docstring). Indices in the outcome refer to `ops`."""
    kept = [i for i, op in enumerate(ops) if not (op.unknown and model.read_only(op))]
    mandatory = [i for i in kept if ops[i].ret is not None]
    optional = sorted((i for i in kept if ops[i].ret is None), key=lambda i: ops[i].call)
    order = mandatory + optional  # local index -> index in ops
    local_ops = [ops[i] for i in order]
    m, count = len(mandatory), len(order)
    events = _event_order(local_ops[:m])
    entry_op, call_entry, ret_entry, nxt, prv = _linked_entries(events, m)
    tail = len(entry_op) - 1
    event_times = [time for time, _kind, _index in events]
    # An optional op is a candidate when the walk stops at return entry e iff its call is
    # earlier than e: the number of mandatory events before its call is < e.
    opt_rank = [_count_before(event_times, local_ops[k].call) for k in range(m, count)]
    opt_ids = list(range(m, count))
    fns = [model.compile(op) for op in local_ops]
    bits = [1 << k for k in range(count)]
    readonly = [prune_readonly and model.read_only(op) for op in local_ops]
    pre = [0] * count
    if prune_symmetric:
        groups: dict[tuple[Any, ...], list[int]] = {}
        for k, op in enumerate(local_ops):
            groups.setdefault(_identity(op), []).append(k)
        for members in groups.values():
            # Any subset of the "a before b" constraints is sound; the latest-called predecessor
            # (found within a bounded look-back, to keep setup linear) carries the chain.
            members.sort(key=lambda k: local_ops[k].call)
            for position, b in enumerate(members):
                ret_b = _ret_key(local_ops[b])
                for a in reversed(members[max(0, position - SYMMETRY_LOOKBACK):position]):
                    if _ret_key(local_ops[a]) < ret_b:
                        pre[b] = bits[a]
                        break
    # Bound (c): for each read-only op, the resetting ops that could run before it returns.
    bounded = [False] * count
    reach_mask = [0] * count
    if prune_bound:
        resetting = [k for k in range(count) if model.resets(local_ops[k])]
        for k in range(m):
            op = local_ops[k]
            if model.read_only(op) and not op.unknown:
                bounded[k] = True
                ret = op.ret
                assert ret is not None
                for j in resetting:
                    if local_ops[j].call < ret and model.helps(local_ops[j], op):
                        reach_mask[k] |= bits[j]
    may_reach = model.may_reach
    grows = [prune_bound and not model.resets(op) and not model.read_only(op) for op in local_ops]
    if not prune_bound:
        lookahead = 0

    n_opt = len(opt_ids)
    state: Any = model.init()
    linearized = 0
    mand_mask = (1 << m) - 1
    # Failed configurations: (mandatory bits, state) -> optional-bit masks. A configuration is
    # recorded when its whole subtree has failed (on backtrack). One with the same mandatory
    # bits and state and a superset of linearized optional ops has fewer options left
    # (optional ops can always go last), so it fails too: dominance, see the docstring (0).
    failed: dict[tuple[int, Any], list[int]] = {}
    failed_exact: set[tuple[int, Any]] = set()
    exact_only = not n_opt

    def known_failed(new_linearized: int, new_state: Any) -> bool:
        if (new_linearized, new_state) in failed_exact:
            return True
        if not n_opt:
            return False
        masks = failed.get((new_linearized & mand_mask, new_state))
        if masks is None:
            return False
        optional_bits = new_linearized & ~mand_mask
        return any(mask & optional_bits == mask for mask in masks)

    # Frame: (local op, state before, forced, optional-scan position, stop entry)
    stack: list[tuple[int, Any, bool, int, int, int]] = []
    steps = 0
    best: list[int] = []
    blocker: int | None = None
    blocker_state: Any = None
    reason: int | None = None

    while True:
        # Arrived at a new configuration.
        if nxt[0] == tail:
            prefix = [order[frame[0]] for frame in stack]
            return SearchOutcome(linearizable=True, steps=steps, prefix=prefix)
        steps += 1
        if steps >= step_limit:
            step_limit = yield steps
        forced = -1
        dead = -1
        # A pending read-only op that (by bound c) every state until it is placed must be able
        # to reach: candidates that only move the state forward must keep it reachable.
        target = -1
        entry = nxt[0]
        x = entry_op[entry]
        while x >= 0:
            if readonly[x]:
                if fns[x](state) is not ILLEGAL:
                    if (linearized & pre[x]) == pre[x]:
                        forced = x
                        break
                elif bounded[x] and (linearized & reach_mask[x]) == reach_mask[x]:
                    if not may_reach(state, local_ops[x]):
                        dead = x
                        break
                    if target < 0:
                        target = x
            entry = nxt[entry]
            x = entry_op[entry]
        if lookahead and forced < 0 and dead < 0:
            # Bound (c) holds for pending reads beyond the frontier too: look a little ahead.
            for _ahead in range(lookahead):
                entry = nxt[entry]
                x = entry_op[entry]
                if entry == tail:
                    break
                if x >= 0 and bounded[x] and (linearized & reach_mask[x]) == reach_mask[x]:
                    if not may_reach(state, local_ops[x]):
                        dead = x
                        break
                    if target < 0:
                        target = x
        if forced >= 0:
            new_linearized = linearized | bits[forced]
            if not known_failed(new_linearized, state):
                stack.append((forced, state, True, 0, 0, target))
                linearized = new_linearized
                c, r = call_entry[forced], ret_entry[forced]
                nxt[prv[c]] = nxt[c]
                prv[nxt[c]] = prv[c]
                nxt[prv[r]] = nxt[r]
                prv[nxt[r]] = prv[r]
                continue
            # The forced child already failed elsewhere: this configuration fails.
            entry = -1
        elif dead >= 0:
            entry = -1
        else:
            entry = nxt[0]
        opt_pos = 0
        stop = 0
        # Walk candidates from `entry` (mandatory) then optional ones from `opt_pos`; on
        # exhaustion backtrack and resume the parent's walk where it left off.
        while True:
            pushed = False
            if entry >= 0:
                x = entry_op[entry]
                while x >= 0:
                    if not readonly[x] and (linearized & pre[x]) == pre[x]:
                        new_state = fns[x](state)
                        if new_state is not ILLEGAL and not (
                            target >= 0 and grows[x]
                            and not may_reach(new_state, local_ops[target])
                        ):
                            new_linearized = linearized | bits[x]
                            if not ((new_linearized, new_state) in failed_exact if exact_only
                                    else known_failed(new_linearized, new_state)):
                                stack.append((x, state, False, 0, 0, target))
                                state = new_state
                                linearized = new_linearized
                                c, r = entry, ret_entry[x]
                                nxt[prv[c]] = nxt[c]
                                prv[nxt[c]] = prv[c]
                                nxt[prv[r]] = nxt[r]
                                prv[nxt[r]] = prv[r]
                                pushed = True
                                break
                    entry = nxt[entry]
                    x = entry_op[entry]
                if pushed:
                    break
                stop = entry
                opt_pos = 0
            if stop > 0:
                while opt_pos < n_opt:
                    k = opt_ids[opt_pos]
                    opt_pos += 1
                    if opt_rank[k - m] >= stop:
                        opt_pos = n_opt
                        break
                    if (linearized & bits[k]) == 0 and (linearized & pre[k]) == pre[k]:
                        new_state = fns[k](state)
                        new_linearized = linearized | bits[k]
                        # An optional op that leaves the state as is can wait until the end.
                        if new_state != state and not (
                            target >= 0 and grows[k]
                            and not may_reach(new_state, local_ops[target])
                        ) and not known_failed(new_linearized, new_state):
                            stack.append((k, state, False, opt_pos, stop, target))
                            state = new_state
                            linearized = new_linearized
                            pushed = True
                            break
                if pushed:
                    break
            # This configuration failed: record the explanation, then backtrack.
            if len(stack) > len(best) or blocker is None:
                best = [order[frame[0]] for frame in stack]
                if dead >= 0:
                    blocker, reason = order[dead], None
                else:
                    first_ret = nxt[0]
                    while entry_op[first_ret] >= 0:
                        first_ret = nxt[first_ret]
                    blocker = order[~entry_op[first_ret]] if first_ret != tail else None
                    reason = None
                    local = ~entry_op[first_ret]
                    if target >= 0 and first_ret != tail and grows[local]:
                        after = fns[local](state)
                        if after is not ILLEGAL and not may_reach(after, local_ops[target]):
                            reason = order[target]
                blocker_state = state
            dead = -1
            while True:
                if not stack:
                    return SearchOutcome(
                        linearizable=False, steps=steps, prefix=best, blocker=blocker,
                        blocker_state=blocker_state, reason=reason,
                    )
                failed_exact.add((linearized, state))
                if n_opt:
                    _remember_failed(failed, linearized, mand_mask, state)
                x, state, was_forced, opt_pos, stop, target = stack.pop()
                linearized &= ~bits[x]
                if x < m:
                    c, r = call_entry[x], ret_entry[x]
                    prv[nxt[r]] = r
                    nxt[prv[r]] = r
                    prv[nxt[c]] = c
                    nxt[prv[c]] = c
                    entry = nxt[c]
                else:
                    entry = -1
                if not was_forced:
                    break
            # Resume the parent's walk after the candidate just undone.


DOMINANCE_MASKS_MAX = 8
SYMMETRY_LOOKBACK = 32


def _remember_failed(
    failed: dict[tuple[int, Any], list[int]], linearized: int, mand_mask: int, state: Any
) -> None:
    """Keep a few optional-op masks per (mandatory bits, state): the fewest-bit ones prune most.
    Forgetting a mask only costs pruning, never soundness."""
    key = (linearized & mand_mask, state)
    mask = linearized & ~mand_mask
    masks = failed.get(key)
    if masks is None:
        failed[key] = [mask]
        return
    if len(masks) < DOMINANCE_MASKS_MAX:
        masks.append(mask)
        return
    worst = max(range(len(masks)), key=lambda i: masks[i].bit_count())
    if mask.bit_count() < masks[worst].bit_count():
        masks[worst] = mask


def _ret_key(op: Operation) -> tuple[int, int]:
    return (1, op.call) if op.ret is None else (0, op.ret)


def _count_before(times: list[int], t: int) -> int:
    lo, hi = 0, len(times)
    while lo < hi:
        mid = (lo + hi) // 2
        if times[mid] < t:
            lo = mid + 1
        else:
            hi = mid
    return lo
