"""A VSR client: one outstanding request, request numbers, timeouts and retries to every replica."""

from __future__ import annotations

from typing import Protocol

from voprd.sim.prng import Rng
from voprd.systems.vsr.messages import REQUEST, Message, Operation
from voprd.systems.vsr.state_machine import Result


class ClientIO(Protocol):
    def send(self, src: int, dst: int, msg: Message) -> None: ...
    def history_call(self, client: int, operation: Operation) -> int: ...
    def history_return(self, index: int, result: Result, op: int) -> None: ...
    def on_client_retry(self, client: int, request: int) -> None: ...


class Workload:
    """Per-seed workload shape (swarm testing): keys, operation mix, think time, timeouts."""

    __slots__ = ("keys", "mix_ppm", "think_ticks_max", "timeout_ticks")

    def __init__(self, rng: Rng) -> None:
        self.keys = tuple(f"k{i}" for i in range(rng.between(1, 4)))
        weights = [rng.between(1, 10) for _ in range(4)]  # get, put, append, cas
        total = sum(weights)
        cumulative = 0
        mix = []
        for weight in weights:
            cumulative += weight
            mix.append(cumulative * 1_000_000 // total)
        self.mix_ppm = tuple(mix)
        self.think_ticks_max = rng.between(0, 6)
        self.timeout_ticks = rng.between(20, 60)


class Client:
    __slots__ = (
        "budget",
        "current",
        "history_index",
        "io",
        "last_seen",
        "n_replicas",
        "node",
        "request",
        "rng",
        "think_ticks",
        "view",
        "waiting_ticks",
        "workload",
    )

    def __init__(
        self, node: int, n_replicas: int, io: ClientIO, rng: Rng, workload: Workload, budget: int
    ) -> None:
        assert node >= n_replicas and budget >= 0
        self.node = node
        self.n_replicas = n_replicas
        self.io = io
        self.rng = rng
        self.workload = workload
        self.budget = budget
        self.request = 0
        self.view = 0
        self.current: Message | None = None
        self.history_index = -1
        self.waiting_ticks = 0
        self.think_ticks = 0
        # key -> a value this client last saw or wrote (makes cas succeed sometimes).
        self.last_seen: dict[str, str] = {}

    @property
    def idle(self) -> bool:
        return self.current is None

    @property
    def done(self) -> bool:
        return self.current is None and self.budget == 0

    def on_tick(self, may_start: bool) -> None:
        if self.current is not None:
            self.waiting_ticks += 1
            if self.waiting_ticks >= self.workload.timeout_ticks:
                self.waiting_ticks = 0
                self.io.on_client_retry(self.node, self.request)
                for replica in range(self.n_replicas):
                    self.io.send(self.node, replica, self.current)
            return
        if not may_start or self.budget <= 0:
            return
        if self.think_ticks > 0:
            self.think_ticks -= 1
            return
        self._start()

    def _start(self) -> None:
        operation = self._draw_operation()
        self.budget -= 1
        self.request += 1
        self.current = (REQUEST, self.node, self.node, self.request, operation)
        self.waiting_ticks = 0
        self.history_index = self.io.history_call(self.node, operation)
        self.io.send(self.node, self.view % self.n_replicas, self.current)

    def _draw_operation(self) -> Operation:
        rng = self.rng
        key = rng.pick(self.workload.keys)
        roll = rng.below(1_000_000)
        mix = self.workload.mix_ppm
        # Unique, delimited values: a duplicated append shows up in every later read.
        value = f"{self.node}:{self.request + 1},"
        if roll < mix[0]:
            return ("get", key, None, None)
        if roll < mix[1]:
            return ("put", key, value, None)
        if roll < mix[2]:
            return ("append", key, value, None)
        expected = self.last_seen.get(key, "") if rng.below(4) else ""
        return ("cas", key, value, expected)

    def on_message(self, msg: Message) -> None:
        """A reply (clients receive nothing else)."""
        _, _, view, _, request, result, op = msg
        current = self.current
        if current is None or request != self.request:
            return  # a duplicate or late reply
        self.view = max(self.view, view)
        name, key, value, _ = current[4]
        if name == "get" and isinstance(result, str):
            self.last_seen[key] = result
        elif value is not None and (name != "cas" or result is True):
            self.last_seen[key] = value
        self.current = None
        self.think_ticks = self.rng.between(0, self.workload.think_ticks_max)
        self.io.history_return(self.history_index, result, op)
