"""Sequential specifications the linearizability search checks histories against.

A model is a small object (see `Model`), in the spirit of Porcupine's `Init/Step/Partition`:

- `init()` -> the initial state. States are compared with `==` and used as dict keys together
  with the set of linearized operations, so a state must be hashable, immutable, never the
  `ILLEGAL` sentinel, and its `hash` must agree with `==`. Verdicts never depend on hash values
  or set/dict iteration order (the search only looks states up), so `str` states are fine even
  though `PYTHONHASHSEED` varies.
- `step(state, op)` -> the state after `op`, or `ILLEGAL` when `op` (with its recorded output)
  cannot happen in `state`. An operation whose outcome is unknown (`op.unknown`) must be legal
  in every state: its output is unconstrained. The search relies on this to leave unknown
  operations for "after everything else" (they may take effect later, or never).
- `compile(op)` -> a one-argument function `state -> state | ILLEGAL` equal to
  `lambda s: step(s, op)`; models may specialise it (the search calls it in its hot loop).
- `partition(ops)` -> independent sub-histories (P-compositionality): a history is linearizable
  iff every part is. Returning `[ops]` is always correct.
- `read_only(op)` -> True when `op` never changes the state where it is legal
  (`step(s, op) in (s, ILLEGAL)` for every `s`). Enables pruning (a) of the search.
- `resets(op)` / `may_reach(state, op)` -> a model-specific bound (pruning (c)). The model
  declares a preorder "state s' extends s" such that every operation with `resets(op) == False`
  only ever moves the state forward (`s` is extended by `step(s, op)`). `may_reach(s, op)` must
  be True whenever some state that extends `s` makes the read-only `op` legal. When no
  resetting operation can still be linearized before a read-only `op` returns and
  `may_reach(s, op)` is False, `op` can never become legal and the configuration is dead.
  `helps(reset, op)` may narrow which resetting operations count: it must be True whenever
  some state that extends `step(s, reset)` (for some s) makes `op` legal.
  `resets` returning True, `helps` and `may_reach` returning True switch the bound off.
- `describe(op)` / `describe_state(state)` -> short human text for explanations.

To add a model: write a class with these methods (subclass `BaseModel` for the defaults),
register it in `MODELS`, and give the parser or `HistoryOp` the op names it understands.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Final, Protocol

import msgspec

Value = int | str


class _Illegal:
    """The one sentinel `step` returns for an illegal operation (a state is never this)."""

    def __repr__(self) -> str:
        return "ILLEGAL"


ILLEGAL: Final = _Illegal()
State = Hashable
StepFn = Callable[[Any], Any]


class Operation(msgspec.Struct, frozen=True, kw_only=True):
    """One client operation, normalised from any input format.

    `call` and `ret` are positions in the history's single time line (distinct integers; see
    `voprd.check.formats.assign_positions`). `ret is None` means the operation never returned
    (timed out with unknown effect, or still pending at the end): it may take effect at any
    time after its call, or never. `unknown` is True when the output is not known.
    """

    process: int
    f: str
    key: str = ""
    value: Value | None = None
    expected: Value | None = None
    output: Value | bool | None = None
    unknown: bool = False
    call: int
    ret: int | None = None
    line: int = 0


class Model(Protocol):
    name: str
    op_names: frozenset[str]

    def init(self) -> State: ...

    def step(self, state: State, op: Operation) -> Any: ...

    def compile(self, op: Operation) -> StepFn: ...

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]: ...

    def read_only(self, op: Operation) -> bool: ...

    def resets(self, op: Operation) -> bool: ...

    def may_reach(self, state: State, op: Operation) -> bool: ...

    def helps(self, reset: Operation, op: Operation) -> bool: ...

    def describe(self, op: Operation) -> str: ...

    def describe_state(self, state: State) -> str: ...


class BaseModel:
    """Defaults: no partitioning-specific logic beyond keys, bound switched off."""

    name = "base"
    op_names: frozenset[str] = frozenset()

    def init(self) -> State:
        raise NotImplementedError

    def step(self, state: State, op: Operation) -> Any:
        raise NotImplementedError

    def compile(self, op: Operation) -> StepFn:
        step = self.step
        return lambda state: step(state, op)

    def partition(self, ops: Sequence[Operation]) -> list[list[Operation]]:
        """One part per key, in order of first appearance (deterministic)."""
        parts: dict[str, list[Operation]] = {}
        for op in ops:
            parts.setdefault(op.key, []).append(op)
        return list(parts.values())

    def read_only(self, op: Operation) -> bool:
        return False

    def resets(self, op: Operation) -> bool:
        return True

    def may_reach(self, state: State, op: Operation) -> bool:
        return True

    def helps(self, reset: Operation, op: Operation) -> bool:
        return True

    def describe(self, op: Operation) -> str:
        args = ", ".join(repr(v) for v in (op.expected, op.value) if v is not None)
        if op.unknown:
            return f"{op.f}({args}) -> ? (unknown outcome)"
        if op.output is None and self.read_only(op) is False:
            return f"{op.f}({args})"
        return f"{op.f}({args}) -> {op.output!r}"

    def describe_state(self, state: State) -> str:
        return repr(state)


def _cas_step(state: State, op: Operation) -> Any:
    """cas(expected, value): swaps iff the state is `expected`; a known output must agree."""
    swapped = state == op.expected
    if not op.unknown and swapped != (op.output is True):
        return ILLEGAL
    return op.value if swapped else state


def _compile_cas(op: Operation) -> StepFn:
    expected, new = op.expected, op.value
    if op.output is True:
        return lambda s: new if s == expected else ILLEGAL
    return lambda s: ILLEGAL if s == expected else s


class RegisterModel(BaseModel):
    """One register per key: read/write/cas, as Porcupine's etcd model.

    State: the value, or None for "no value" (the initial state). read(None) is legal iff there is
    no value, read(N) iff the value is N, an unknown read always. write(V) sets V. cas(A, B): if
    the value is A it becomes B and the call must have succeeded (output True); otherwise the
    value is unchanged and the call must have failed. An unknown cas is always legal and acts as a
    cas where it takes effect.
    """

    name = "register"
    op_names = frozenset({"read", "write", "cas"})

    def init(self) -> State:
        return None

    def step(self, state: State, op: Operation) -> Any:
        f = op.f
        if f == "read":
            return state if op.unknown or state == op.output else ILLEGAL
        if f == "write":
            return op.value
        if f == "cas":
            return _cas_step(state, op)
        raise ValueError(f"register model: unknown operation {f!r}")

    def compile(self, op: Operation) -> StepFn:
        if op.unknown:
            return super().compile(op)
        f = op.f
        if f == "read":
            want = op.output
            return lambda s: s if s == want else ILLEGAL
        if f == "write":
            value = op.value
            return lambda s: value
        if f == "cas":
            return _compile_cas(op)
        raise ValueError(f"register model: unknown operation {f!r}")

    def read_only(self, op: Operation) -> bool:
        return op.f == "read" or (op.f == "cas" and op.output is False and not op.unknown)

    def resets(self, op: Operation) -> bool:
        return not self.read_only(op)

    def may_reach(self, state: State, op: Operation) -> bool:
        # Only read-only operations can follow, so the state stays what it is.
        return self.step(state, op) is not ILLEGAL

    def helps(self, reset: Operation, op: Operation) -> bool:
        # A write or cas that sets V (if it takes effect) only helps a read of V, or a failed
        # cas expecting something other than V.
        if op.f == "read":
            return reset.value == op.output
        return reset.value != op.expected

    def describe_state(self, state: State) -> str:
        return "no value" if state is None else repr(state)


class KvModel(BaseModel):
    """Porcupine's kv model per key: state is a string, initially "".

    get returns the state (a recorded output of None reads as ""); put(V) sets V; append(V) sets
    state+V; cas(E, V): if the state is E it becomes V and the call must have succeeded, otherwise
    unchanged and the call must have failed. Unknown outcomes are always legal.
    Bound (c): append only extends the state (prefix order), so with no put or cas left to run, a
    get can only ever return a string that starts with the current state.
    """

    name = "kv"
    op_names = frozenset({"get", "put", "append", "cas"})

    def init(self) -> State:
        return ""

    @staticmethod
    def _got(op: Operation) -> str:
        return "" if op.output is None else str(op.output)

    def step(self, state: State, op: Operation) -> Any:
        f = op.f
        assert isinstance(state, str)
        if f == "get":
            return state if op.unknown or state == self._got(op) else ILLEGAL
        if f == "put":
            return op.value
        if f == "append":
            return state + str(op.value)
        if f == "cas":
            return _cas_step(state, op)
        raise ValueError(f"kv model: unknown operation {f!r}")

    def compile(self, op: Operation) -> StepFn:
        if op.unknown:
            return super().compile(op)
        f = op.f
        if f == "get":
            want = self._got(op)
            return lambda s: s if s == want else ILLEGAL
        if f == "put":
            value = op.value
            return lambda s: value
        if f == "append":
            suffix = str(op.value)
            return lambda s: s + suffix
        if f == "cas":
            return _compile_cas(op)
        raise ValueError(f"kv model: unknown operation {f!r}")

    def read_only(self, op: Operation) -> bool:
        return op.f == "get" or (op.f == "cas" and op.output is False and not op.unknown)

    def resets(self, op: Operation) -> bool:
        return op.f in ("put", "cas") and not self.read_only(op)

    def may_reach(self, state: State, op: Operation) -> bool:
        if op.f == "get" and not op.unknown:
            assert isinstance(state, str)
            return self._got(op).startswith(state)
        return True

    def helps(self, reset: Operation, op: Operation) -> bool:
        # put/cas set V, and appends then extend V: only reads of strings starting with V.
        if op.f == "get" and not op.unknown:
            return self._got(op).startswith(str(reset.value))
        return True

    def describe_state(self, state: State) -> str:
        return repr(state)


MODELS: dict[str, Model] = {"register": RegisterModel(), "kv": KvModel()}


def get_model(name: str) -> Model:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (known: {', '.join(sorted(MODELS))})") from None
