"""A deliberately broken replica is caught by each invariant (and exceptions become crashes).

The broken replica class goes in through `VsrSystem(replica_class=...)`: no monkeypatching."""

from __future__ import annotations

from typing import Any

from voprd.options import RunOptions
from voprd.sim.clock import TICK_US
from voprd.sim.faults import FaultPlan
from voprd.sim.prng import Streams
from voprd.sim.run import simulate
from voprd.systems.vsr import VSR, VsrSystem
from voprd.systems.vsr.messages import REPLY, make_entry
from voprd.systems.vsr.replica import Replica
from voprd.systems.vsr.state_machine import KvStore, Result

NO_FAULTS = RunOptions(faults=())


def _seed_with(replicas: int) -> int:
    for seed in range(200):
        plan = FaultPlan(Streams(seed).stream("faults.plan"), (), TICK_US)
        if plan.replicas == replicas and plan.request_budget >= 60:
            return seed
    raise AssertionError("no seed with that shape")


def _run_with(replica_class: type[Replica], seed: int) -> Any:
    return simulate(seed, NO_FAULTS, VsrSystem(replica_class)).result


def test_the_unbroken_cluster_passes() -> None:
    for replicas in (1, 3, 5):
        result = simulate(_seed_with(replicas), NO_FAULTS, VSR).result
        assert result.status == "ok", result.message
        assert not result.bounds_reached


def test_agreement() -> None:
    class Divergent(Replica):
        def _commit_upto(self, target: int) -> None:
            # Op 7 changes in memory after it was appended (and chained): its commit disagrees.
            if self.rid == 1 and self.transfer is None and self.commit < 7 <= min(
                    target, len(self.log)):
                entry = self.log[6]
                self.log[6] = make_entry(7, entry[1], entry[2], entry[3],
                                         ("put", "evil", "x", None), self.log[5][5])
            super()._commit_upto(target)

    result = _run_with(Divergent, _seed_with(3))
    assert (result.status, result.kind, result.invariant) == ("failed", "invariant", "agreement")
    assert "op 7" in result.message and result.history and result.trace_tail


def test_commit_monotonic() -> None:
    class Forgetful(Replica):
        def on_tick(self) -> None:
            super().on_tick()
            if self.rid == 1 and self.commit >= 5:
                self.commit -= 1

    result = _run_with(Forgetful, _seed_with(3))
    assert (result.status, result.invariant) == ("failed", "commit_monotonic")


def test_durability_reply_before_commit() -> None:
    class Eager(Replica):
        def _on_request(self, msg: Any) -> None:
            before = len(self.log)
            super()._on_request(msg)
            if len(self.log) > before:
                entry = self.log[-1]
                self.io.send(self.rid, entry[2],
                             (REPLY, self.rid, self.view, entry[2], entry[3], None, entry[0]))

    result = _run_with(Eager, _seed_with(3))
    assert (result.status, result.invariant) == ("failed", "durability")


def test_durability_new_primary_loses_acknowledged_op() -> None:
    class Lossy(Replica):
        def _become_primary(self) -> None:
            for rid, dvc in list(self.dvcs.items()):
                self.dvcs[rid] = (*dvc[:3], dvc[3][:-1], *dvc[4:5], 0)
            super()._become_primary()

    system = VsrSystem(Lossy)
    failures = [simulate(seed, RunOptions(faults=("crash",)), system).result for seed in range(12)]
    assert {r.invariant for r in failures if r.status == "failed"} == {"durability"}


def test_convergence() -> None:
    class Skewed(KvStore):
        def apply(self, op_number: int, operation: Any) -> Result:
            if operation[0] == "append":
                operation = (operation[0], operation[1], operation[2] + "!", None)
            return super().apply(op_number, operation)

    class Diverging(Replica):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            if self.rid == 2:
                self.kv = Skewed()

    result = _run_with(Diverging, _seed_with(3))
    assert (result.status, result.invariant) == ("failed", "convergence")


def test_liveness() -> None:
    class Stubborn(Replica):
        def _on_request(self, msg: Any) -> None:
            if msg[3] < 3:  # ignores every request after a client's second
                super()._on_request(msg)

    result = _run_with(Stubborn, _seed_with(3))
    assert (result.status, result.kind, result.invariant) == ("failed", "liveness", "liveness")
    assert "pending" in result.message
    assert "safety_time_limit" in result.bounds_reached


def test_exception_in_replica_code_is_a_crash_with_stack() -> None:
    class Raising(Replica):
        def on_tick(self) -> None:
            super().on_tick()
            if self.ticks == 20:
                raise RuntimeError("replica blew up")

    result = _run_with(Raising, _seed_with(3))
    assert (result.status, result.kind) == ("failed", "crash")
    assert "Traceback" in result.message and "replica blew up" in result.message
