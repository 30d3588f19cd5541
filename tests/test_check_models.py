"""The register and kv models, their contracts for the search, and unknown outcomes."""

from __future__ import annotations

import itertools

import pytest

from voprd.check import check_history
from voprd.check.checker import check_operations
from voprd.check.history import HistoryOp
from voprd.check.models import ILLEGAL, MODELS, KvModel, Operation, RegisterModel, get_model

R, KV = RegisterModel(), KvModel()


def op(f: str, **fields: object) -> Operation:
    return Operation(f=f, process=0, call=1, ret=2, **fields)  # type: ignore[arg-type]


def test_register_semantics() -> None:
    assert R.init() is None
    assert R.step(None, op("read", output=None)) is None
    assert R.step(None, op("read", output=1)) is ILLEGAL
    assert R.step(3, op("write", value=4)) == 4
    assert R.step(3, op("cas", expected=3, value=5, output=True)) == 5
    assert R.step(3, op("cas", expected=3, value=5, output=False)) is ILLEGAL
    assert R.step(2, op("cas", expected=3, value=5, output=False)) == 2
    assert R.step(2, op("cas", expected=3, value=5, output=True)) is ILLEGAL
    assert R.step(2, op("read", unknown=True)) == 2
    assert R.step(3, op("cas", expected=3, value=5, unknown=True)) == 5
    assert R.step(2, op("cas", expected=3, value=5, unknown=True)) == 2


def test_kv_semantics() -> None:
    assert KV.init() == ""
    assert KV.step("", op("get", output=None)) == ""  # a missing value reads as ""
    assert KV.step("ab", op("get", output="ab")) == "ab"
    assert KV.step("ab", op("get", output="a")) is ILLEGAL
    assert KV.step("ab", op("append", value="c")) == "abc"
    assert KV.step("ab", op("put", value="z")) == "z"
    assert KV.step("ab", op("cas", expected="ab", value="q", output=True)) == "q"
    assert KV.step("ab", op("cas", expected="x", value="q", output=False)) == "ab"


SAMPLE_OPS = [
    *(op("read", output=v) for v in (None, 0, 1)),
    *(op("write", value=v) for v in (0, 1)),
    *(op("cas", expected=a, value=b, output=o)
      for a, b, o in itertools.product((0, 1), (0, 1), (True, False))),
]
KV_OPS = [
    *(op("get", output=v) for v in ("", "a", "ab")),
    op("put", value="a"), op("append", value="b"),
    *(op("cas", expected=a, value="b", output=o)
      for a, o in itertools.product(("", "a"), (True, False))),
]


@pytest.mark.parametrize(
    ("model", "ops", "states"),
    [(R, SAMPLE_OPS, [None, 0, 1]), (KV, KV_OPS, ["", "a", "ab", "b"])],
)
def test_model_contracts(model: RegisterModel | KvModel, ops: list[Operation],
                         states: list[object]) -> None:
    for operation in ops:
        fn = model.compile(operation)
        unknown = Operation(**{**{f: getattr(operation, f) for f in operation.__struct_fields__},
                               "unknown": True, "output": None})
        for state in states:
            after = model.step(state, operation)
            assert fn(state) == after or (fn(state) is ILLEGAL and after is ILLEGAL)
            if model.read_only(operation):
                assert after is ILLEGAL or after == state
            if not model.resets(operation) and after is not ILLEGAL and isinstance(state, str):
                assert str(after).startswith(state)  # only moves forward (bound c)
            assert model.step(state, unknown) is not ILLEGAL  # unknown outcomes always legal


def test_kv_bound_may_reach() -> None:
    assert KV.may_reach("ab", op("get", output="abc"))
    assert not KV.may_reach("ab", op("get", output="ax"))
    assert not R.may_reach(1, op("read", output=2))


def test_get_model_and_registry() -> None:
    assert set(MODELS) == {"register", "kv"}
    assert get_model("kv") is MODELS["kv"]
    with pytest.raises(ValueError, match="unknown model"):
        get_model("queue")


def hop(process: int, f: str, call: int, ret: int | None, **fields: object) -> HistoryOp:
    return HistoryOp(process=process, op=f, call_us=call, return_us=ret, **fields)  # type: ignore[arg-type]


def test_unknown_write_may_take_effect_later_or_never() -> None:
    timed_out = hop(0, "put", 0, None, key="k", value="x")
    # Later reads may see it ...
    seen = [timed_out, hop(1, "get", 10, 11, key="k", output="x")]
    assert check_history(seen).verdict == "linearizable"
    # ... or not, even after seeing it is not allowed to "un-happen".
    unseen = [timed_out, hop(1, "get", 10, 11, key="k", output="")]
    assert check_history(unseen).verdict == "linearizable"
    flip = [timed_out, hop(1, "get", 10, 11, key="k", output="x"),
            hop(1, "get", 12, 13, key="k", output="")]
    assert check_history(flip).verdict == "not_linearizable"
    # ... but never before its call.
    early = [hop(1, "get", 0, 1, key="k", output="x"), hop(0, "put", 5, None, key="k", value="x")]
    assert check_history(early).verdict == "not_linearizable"


def test_timed_out_read_constrains_nothing() -> None:
    ops = [
        Operation(process=0, f="write", value=1, call=1, ret=2),
        Operation(process=1, f="read", unknown=True, call=3, ret=4),
        Operation(process=1, f="read", output=1, call=5, ret=6),
    ]
    assert check_operations(ops, R).verdict == "linearizable"


def test_unknown_cas_acts_as_cas_where_it_takes_effect() -> None:
    base = [
        Operation(process=0, f="write", value=1, call=1, ret=2),
        Operation(process=1, f="cas", expected=1, value=2, unknown=True, call=3),
    ]
    reads_two = [*base, Operation(process=2, f="read", output=2, call=5, ret=6)]
    assert check_operations(reads_two, R).verdict == "linearizable"
    wrong_expected = [
        Operation(process=0, f="write", value=1, call=1, ret=2),
        Operation(process=1, f="cas", expected=7, value=2, unknown=True, call=3),
        Operation(process=2, f="read", output=2, call=5, ret=6),
    ]
    assert check_operations(wrong_expected, R).verdict == "not_linearizable"


def test_check_history_verdict_fields_and_step_budget() -> None:
    ops = [hop(i, "append", i * 10, i * 10 + 50, key="k", value=str(i)) for i in range(10)]
    ops.append(hop(20, "get", 500, 510, key="k", output="0123456789"))
    verdict = check_history(ops, budget_ms=None, max_steps=10**6)
    assert verdict.verdict == "linearizable"
    assert verdict.ops == 11 and verdict.elapsed_ms >= 0 and verdict.explanation == ""
    bad = [*ops[:-1], hop(20, "get", 500, 510, key="k", output="9876543210")]
    refuted = check_history(bad, budget_ms=None, max_steps=10**6)
    assert refuted.verdict == "not_linearizable" and refuted.failing_keys == ["k"]
    assert "cannot linearize" in refuted.explanation
    starved = check_history(bad, budget_ms=None, max_steps=1)
    assert starved.verdict == "unknown"
    assert "budget" in starved.explanation
