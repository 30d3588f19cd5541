"""The client history of a run, as the clients record it (`Env.history_call` / `history_return`).

Each operation is noted in the trace (`call`, `return`) and kept with its simulated call and return
times; `ops()` gives the `HistoryOp`s the linearizability check, `--history-file` and the report
read (`voprd/check/history.py`). An operation that never returned has `return_us` None.

A history process is a client session: client i is process i until it starts an operation while
its previous one never returned (it crashed and restarted, or gave the operation up, e.g. evicted):
from then on it is a new process (numbered from the client count up), as a process has at most
one operation open.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from voprd.check.history import HistoryOp, OpName, op_text
from voprd.sim.system import Output
from voprd.sim.trace import K

if TYPE_CHECKING:
    from voprd.sim.engine import Simulation

_K_CALL = K["call"]
_K_RETURN = K["return"]


class _Op:
    __slots__ = (
        "call_us", "expected", "key", "name", "node", "output", "process", "return_us", "value",
    )

    def __init__(
        self, node: int, process: int, name: OpName, key: str, value: str | None,
        expected: str | None, call_us: int,
    ) -> None:
        self.node = node
        self.process = process
        self.name = name
        self.key = key
        self.value = value
        self.expected = expected
        self.call_us = call_us
        self.return_us: int | None = None
        self.output: Output = None


class History:
    __slots__ = ("calls", "next_process", "open", "process", "records", "sim")

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.records: list[_Op] = []
        clients = sim.plan.clients
        # Per client: its current process, its open operation (-1: none), the calls it made.
        self.process = list(range(clients))
        self.open = [-1] * clients
        self.calls = [0] * clients
        self.next_process = clients

    def call(
        self, client: int, op: OpName, key: str = "", value: str | None = None,
        expected: str | None = None,
    ) -> int:
        sim = self.sim
        assert sim.n <= client < sim.nodes_total, f"node {client} is not a client"
        index = client - sim.n
        if self.open[index] >= 0:  # its previous operation never returned: a new session
            self.process[index] = self.next_process
            self.next_process += 1
        self.open[index] = len(self.records)
        self.calls[index] += 1
        self.records.append(_Op(client, self.process[index], op, key, value, expected, sim.now))
        sim.note(client, _K_CALL, len(self.records), 0, detail=op_text(op, key, value, expected))
        return len(self.records) - 1

    def ret(self, index: int, output: Output, tag: int = 0, note: str = "") -> None:
        sim = self.sim
        record = self.records[index]
        assert record.return_us is None, "an operation returns once"
        record.return_us = sim.now
        record.output = output
        client = record.node
        if self.open[client - sim.n] == index:
            self.open[client - sim.n] = -1
        text = op_text(record.name, record.key, record.value, record.expected)
        suffix = f" ({note})" if note else ""
        sim.note(client, _K_RETURN, index + 1, tag, detail=f"{text} -> {output!r}{suffix}")
        sim.cluster.on_return(client, index, output, tag)
        sim.phases.workload_returned()

    def ops(self) -> list[HistoryOp]:
        return [
            HistoryOp(
                process=r.process, op=r.name, key=r.key, value=r.value, expected=r.expected,
                call_us=r.call_us, return_us=r.return_us,
                output=r.output if r.return_us is not None else None,
            )
            for r in self.records
        ]
