"""Shared helpers for the linearizability checker tests: where the Porcupine data lives,
a brute-force reference checker."""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from pathlib import Path

from voprd.check.models import ILLEGAL, Model, Operation


def shared_data_dir() -> Path:
    """The Porcupine test data: $VOPRD_SHARED_DATA, else ../shared beside the repository (where
    CI lays it, and where each worktree finds it); never an absolute path of one machine."""
    override = os.environ.get("VOPRD_SHARED_DATA")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data" / "porcupine"


def brute_force(model: Model, ops: Sequence[Operation]) -> bool:
    """Linearizable iff some order of all returned ops plus any subset of never-returned ones
    respects real time and the model. Exponential: tiny histories only."""
    mandatory = [op for op in ops if op.ret is not None]
    optional = [op for op in ops if op.ret is None]
    assert len(ops) <= 8
    for size in range(len(optional) + 1):
        for chosen in itertools.combinations(optional, size):
            for order in itertools.permutations([*mandatory, *chosen]):
                if _respects_real_time(order) and _legal(model, order):
                    return True
    return False


def _respects_real_time(order: Sequence[Operation]) -> bool:
    for i, earlier in enumerate(order):
        for later in order[i + 1:]:
            if later.ret is not None and later.ret < earlier.call:
                return False
    return True


def _legal(model: Model, order: Sequence[Operation]) -> bool:
    state = model.init()
    for op in order:
        state = model.step(state, op)
        if state is ILLEGAL:
            return False
    return True
