"""A VSR client: one outstanding request, request numbers, timeouts and retries to every replica.

A client works in sessions: it registers one (request number 0, answered once the registration
is committed) before its first request, numbers its requests 1, 2, ... within it, and only trusts
replies for that session. When the cluster answers EVICTED (its session fell out of the bounded
client table), the outcome of its open request stays unknown: it gives it up and registers a new
session (a new client id) for its next request. A crashed client restarts (incarnation 1, 2, ...)
with a new session and request numbers from 1 again.
"""

from __future__ import annotations

from typing import Protocol

from voprd.sim.checksum import unseal
from voprd.sim.prng import Rng
from voprd.systems.vsr.messages import (
    CLIENT_NODE_MASK,
    EVICTED,
    REGISTER,
    REQUEST,
    Message,
    Operation,
)
from voprd.systems.vsr.state_machine import Result

# Sessions of one node: a node's k-th session is node + SESSION_STRIDE * k (k = incarnation *
# SESSIONS_PER_INCARNATION + sessions started since the restart).
SESSION_STRIDE = CLIENT_NODE_MASK + 1
SESSIONS_PER_INCARNATION = 4096


class ClientIO(Protocol):
    def send(self, src: int, dst: int, msg: Message) -> None: ...
    def history_call(self, client: int, operation: Operation) -> int: ...
    def history_return(self, index: int, result: Result, op: int) -> None: ...
    def on_client_retry(self, client: int, request: int) -> None: ...


class Workload:
    """Per-seed workload shape (swarm testing): keys, operation mix, think time, timeouts, and the
    size of the replicas' client table."""

    __slots__ = ("clients_max", "keys", "mix_ppm", "think_ticks_max", "timeout_ticks")

    def __init__(self, rng: Rng, clients: int = 1) -> None:
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
        # Sessions the client table holds: room for every client, and in many seeds not much
        # more, so the new sessions of restarted clients evict others (live ones too).
        self.clients_max = rng.between(clients, clients + 1)


class Client:
    __slots__ = (
        "budget",
        "client_id",
        "current",
        "history_index",
        "io",
        "last_seen",
        "n_replicas",
        "node",
        "registered",
        "request",
        "rng",
        "session",
        "think_ticks",
        "view",
        "waiting_ticks",
        "workload",
    )

    def __init__(
        self, node: int, n_replicas: int, io: ClientIO, rng: Rng, workload: Workload, budget: int,
        incarnation: int = 0,
    ) -> None:
        assert n_replicas <= node <= CLIENT_NODE_MASK and budget >= 0
        self.node = node
        self.n_replicas = n_replicas
        self.io = io
        self.rng = rng
        self.workload = workload
        self.budget = budget
        self.session = incarnation * SESSIONS_PER_INCARNATION
        self.client_id = node + SESSION_STRIDE * self.session
        self.registered = False
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
        """No operation outstanding (a registration in progress is not one)."""
        return self.current is None or self.current[3] == 0

    @property
    def done(self) -> bool:
        return self.idle and self.budget == 0

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
        if not self.registered:
            self._send((REQUEST, self.node, self.client_id, 0, REGISTER))
            return
        operation = self._draw_operation()
        self.budget -= 1
        self.request += 1
        self.history_index = self.io.history_call(self.node, operation)
        self._send((REQUEST, self.node, self.client_id, self.request, operation))

    def _send(self, request: Message) -> None:
        self.current = request
        self.waiting_ticks = 0
        self.io.send(self.node, self.view % self.n_replicas, request)

    def _draw_operation(self) -> Operation:
        rng = self.rng
        key = rng.pick(self.workload.keys)
        roll = rng.below(1_000_000)
        mix = self.workload.mix_ppm
        # Unique, delimited values: a duplicated append shows up in every later read.
        value = f"{self.client_id}:{self.request + 1},"
        if roll < mix[0]:
            return ("get", key, None, None)
        if roll < mix[1]:
            return ("put", key, value, None)
        if roll < mix[2]:
            return ("append", key, value, None)
        expected = self.last_seen.get(key, "") if rng.below(4) else ""
        return ("cas", key, value, expected)

    def on_message(self, msg: Message) -> None:
        """A reply or EVICTED (clients receive nothing else)."""
        verified = unseal(msg)
        current = self.current
        if verified is None or current is None or verified[3] != self.client_id:
            return  # corrupted, nothing outstanding, or for an earlier session
        msg = verified
        if msg[0] == EVICTED:
            # The session is gone: the open request may or may not have executed (never
            # again). Give it up and start a new session.
            self.session += 1
            self.client_id = self.node + SESSION_STRIDE * self.session
            self.registered = False
            self.request = 0
            self.current = None
            self.view = max(self.view, msg[2])
            return
        _, _, view, _, request, result, op = msg
        if request != current[3]:
            return  # a duplicate or late reply
        self.view = max(self.view, view)
        if request == 0:
            self.registered = True
            self.current = None
            return
        name, key, value, _ = current[4]
        if name == "get" and isinstance(result, str):
            self.last_seen[key] = result
        elif value is not None and (name != "cas" or result is True):
            self.last_seen[key] = value
        self.current = None
        self.think_ticks = self.rng.between(0, self.workload.think_ticks_max)
        self.io.history_return(self.history_index, result, op)
