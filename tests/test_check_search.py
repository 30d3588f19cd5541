"""The fast search (with each pruning alone and all together) against the plain search and a
brute-force checker on random histories, linearizable by construction and perturbed."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.check_support import brute_force
from voprd.check.generate import kv_history, register_history, stale_read
from voprd.check.models import KvModel, Model, Operation, RegisterModel
from voprd.check.search import SearchOutcome, fast_search, plain_search

REGISTER = RegisterModel()
KV = KvModel()
FLAG_SETS = [
    {},
    {"prune_readonly": False, "prune_symmetric": False, "prune_bound": False},
    {"prune_readonly": True, "prune_symmetric": False, "prune_bound": False},
    {"prune_readonly": False, "prune_symmetric": True, "prune_bound": False},
    {"prune_readonly": False, "prune_symmetric": False, "prune_bound": True},
]


def run(gen: object) -> SearchOutcome:
    try:
        next(gen)  # type: ignore[call-overload]
    except StopIteration as stop:
        outcome: SearchOutcome = stop.value
        return outcome
    raise AssertionError("search did not finish within its step limit")


def perturb(rng: random.Random, ops: list[Operation], values: list[object]) -> list[Operation]:
    """Change one known output at random (the result may or may not be linearizable)."""
    known = [i for i, op in enumerate(ops) if not op.unknown and op.f in ("read", "get", "cas")]
    if not known:
        return ops
    index = rng.choice(known)
    op = ops[index]
    if op.f == "cas":
        output: object = not op.output
    else:
        output = rng.choice(values)
    copy = list(ops)
    copy[index] = Operation(
        process=op.process, f=op.f, key=op.key, value=op.value, expected=op.expected,
        output=output, call=op.call, ret=op.ret, line=op.line,  # type: ignore[arg-type]
    )
    return copy


def all_verdicts(model: Model, ops: list[Operation]) -> list[bool]:
    verdicts = [run(plain_search(model, ops, 10**7)).linearizable]
    for flags in FLAG_SETS:
        verdicts.append(run(fast_search(model, ops, 10**7, **flags)).linearizable)  # type: ignore[arg-type]
    return verdicts


def tiny_register(seed: int) -> list[Operation]:
    rng = random.Random(seed)
    ops = register_history(rng, processes=rng.randint(2, 4), ops=rng.randint(1, 6), values=2,
                           timeout_percent=25)
    return perturb(rng, ops, [None, 0, 1]) if rng.random() < 0.6 else ops


@settings(max_examples=250, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_register_tiny_all_searches_agree_with_brute_force(seed: int) -> None:
    ops = tiny_register(seed)
    expected = brute_force(REGISTER, ops)
    assert all_verdicts(REGISTER, ops) == [expected] * (len(FLAG_SETS) + 1)


@settings(max_examples=250, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_kv_tiny_all_searches_agree_with_brute_force(seed: int) -> None:
    rng = random.Random(seed)
    ops = kv_history(rng, processes=rng.randint(2, 4), ops=rng.randint(1, 6), keys=1,
                     timeout_percent=25)
    if rng.random() < 0.6:
        gets = sorted({str(op.output) for op in ops if op.f == "get" and not op.unknown})
        ops = perturb(rng, ops, [*gets, "", "zz"])
    expected = brute_force(KV, ops)
    assert all_verdicts(KV, ops) == [expected] * (len(FLAG_SETS) + 1)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_register_medium_fast_agrees_with_plain(seed: int) -> None:
    rng = random.Random(seed)
    ops = register_history(rng, processes=rng.randint(3, 6), ops=rng.randint(8, 22), values=3,
                           timeout_percent=15)
    if rng.random() < 0.5:
        ops = perturb(rng, ops, [None, 0, 1, 2])
    verdicts = all_verdicts(REGISTER, ops)
    assert verdicts == [verdicts[0]] * len(verdicts)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_kv_medium_fast_agrees_with_plain(seed: int) -> None:
    rng = random.Random(seed)
    ops = kv_history(rng, processes=rng.randint(3, 6), ops=rng.randint(8, 22), keys=1,
                     timeout_percent=15)
    if rng.random() < 0.5:
        gets = sorted({str(op.output) for op in ops if op.f == "get" and not op.unknown})
        ops = perturb(rng, ops, [*gets, ""])
    verdicts = all_verdicts(KV, ops)
    assert verdicts == [verdicts[0]] * len(verdicts)


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_generated_histories_have_their_constructed_verdicts(seed: int) -> None:
    rng = random.Random(seed)
    ops = register_history(rng, processes=rng.randint(4, 10), ops=rng.randint(10, 40), values=3)
    assert run(fast_search(REGISTER, ops, 10**7)).linearizable
    bad = stale_read(rng, ops)
    if bad is not None:
        assert not run(fast_search(REGISTER, bad, 10**7)).linearizable


def test_refutation_names_prefix_and_blocking_operation() -> None:
    # write(1) completes, then a read returns the initial "no value": stale.
    ops = [
        Operation(process=0, f="write", value=1, call=1, ret=2, line=1),
        Operation(process=1, f="read", output=None, call=3, ret=4, line=2),
    ]
    for search in (plain_search(REGISTER, ops, 100), fast_search(REGISTER, ops, 100)):
        outcome = run(search)
        assert not outcome.linearizable
        assert outcome.prefix == [0]
        assert outcome.blocker == 1


def test_search_yields_at_its_step_limit_and_resumes() -> None:
    rng = random.Random(7)
    ops = register_history(rng, processes=5, ops=30, values=3)
    gen = fast_search(REGISTER, ops, 3)
    assert next(gen) == 3
    steps = 3
    while True:
        try:
            steps = gen.send(steps + 3)
        except StopIteration as stop:
            assert stop.value.linearizable
            break


def test_nested_identical_operations_are_not_interchangeable() -> None:
    # b = write(1) runs inside a = write(1); only "b, read, write(2), a, read" works. A symmetry
    # rule that ordered identical ops by call alone (ignoring returns) would put a before b.
    ops = [
        Operation(process=0, f="write", value=1, call=1, ret=20),
        Operation(process=1, f="write", value=1, call=2, ret=3),
        Operation(process=2, f="read", output=1, call=4, ret=5),
        Operation(process=3, f="write", value=2, call=6, ret=7),
        Operation(process=4, f="read", output=1, call=21, ret=22),
    ]
    assert brute_force(REGISTER, ops)
    assert all_verdicts(REGISTER, ops) == [True] * (len(FLAG_SETS) + 1)
