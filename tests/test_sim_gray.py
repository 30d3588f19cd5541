"""The later fault families, driven directly on the engine with a probe system (no protocol in
the way): late replays, corruption and message checksums, several partitions and their shapes,
gray slowdowns, freezing pauses, clock drift changes and jumps, client crashes and sessions in
the history, and system-declared cluster shapes."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from voprd.options import FAULT_CLASSES, RunOptions
from voprd.sim.checksum import seal, unseal
from voprd.sim.clock import TICK_US
from voprd.sim.engine import HOLD_MAX, Simulation
from voprd.sim.events import EV_DELIVER
from voprd.sim.faults import FaultPlan, check_cluster_shape
from voprd.sim.network import BRIDGE, CLIENT_CUT, PEERS_CUT, corrupt
from voprd.sim.prng import Rng
from voprd.sim.run import simulate
from voprd.sim.system import Env, Message, Recovery, System
from voprd.systems.vsr import VSR

PING = 0


class ProbeServer:
    def __init__(self, env: Env, index: int) -> None:
        self.env = env
        self.index = index
        self.got: list[tuple[int, Message]] = []
        self.done_writes: list[tuple[int, int, bool]] = []

    def on_message(self, msg: Message) -> None:
        self.got.append((self.env.now, msg))

    def on_tick(self) -> None:
        pass

    def on_write_done(self, slot: int, ok: bool) -> None:
        self.done_writes.append((self.env.now, slot, ok))

    def restart(self) -> None:
        pass


class ProbeClient:
    def __init__(self, env: Env, index: int, budget: int, incarnation: int = 0) -> None:
        self.env = env
        self.node = env.replicas + index
        self.budget = budget
        self.incarnation = incarnation
        self.open = -1

    @property
    def idle(self) -> bool:
        return self.open < 0

    @property
    def done(self) -> bool:
        return self.idle and self.budget == 0

    def on_message(self, msg: Message) -> None:
        pass

    def on_tick(self, may_start: bool) -> None:
        pass

    def call(self) -> None:
        self.budget -= 1
        self.open = self.env.history_call(self.node, "read", "k")

    def finish(self) -> None:
        self.env.history_return(self.open, None)
        self.open = -1


class ProbeCluster:
    def __init__(self, env: Env, restarts: bool) -> None:
        self.env = env
        self.restarted: list[tuple[int, int, int]] = []
        if not restarts:
            self.restart_client = None  # type: ignore[assignment]

    def start_server(self, index: int) -> ProbeServer:
        return ProbeServer(self.env, index)

    def restart_server(self, index: int, incarnation: int) -> tuple[ProbeServer, Recovery]:
        return ProbeServer(self.env, index), Recovery(0, False, "")

    def client(self, index: int, budget: int) -> ProbeClient:
        return ProbeClient(self.env, index, budget)

    def restart_client(self, index: int, incarnation: int, budget: int) -> ProbeClient:
        self.restarted.append((index, incarnation, budget))
        return ProbeClient(self.env, index, budget, incarnation)

    def on_return(self, client: int, index: int, output: Any, tag: int) -> None:
        pass

    def converged(self, core: tuple[int, ...]) -> str | None:
        return None


class Probe(System):
    name = "probe"
    model = "register"
    message_names = ("ping",)
    cluster_sizes: tuple[int, ...] = (3,)
    message_checksums = True

    def __init__(self, restarts: bool = True) -> None:
        self.restarts = restarts

    def start(self, env: Env) -> ProbeCluster:
        return ProbeCluster(env, self.restarts)


def _sim(faults: tuple[str, ...] = (), seed: int = 1, **system: Any) -> Simulation:
    """A probe simulation whose events are only what a test pushes (no nemesis, no ticks)."""
    return Simulation(seed, RunOptions(faults=faults), Probe(**system), record_trace=True)


def _drain(sim: Simulation) -> None:
    sim._loop(sim.options.max_events)


def _server(sim: Simulation, r: int) -> ProbeServer:
    node: ProbeServer = sim.nodes[r]
    return node


# ---- replays, corruption, checksums -----------------------------------------------------------
def test_a_replayed_message_arrives_again_much_later() -> None:
    sim = _sim()
    net = sim.network
    sim.plan.replay_us_max = 2_000_000
    net.replay_q20, net.corrupt_q20 = 1 << 20, 0
    net.countdown = 1  # the next message is the special one
    net.send(0, 1, seal((PING, 0, "hello")))
    _drain(sim)
    got = _server(sim, 1).got
    assert len(got) == 2 and got[0][1] == got[1][1]
    assert got[1][0] - got[0][0] >= 2_000_000 // 10 - 10_000
    assert sim.fault_counts["replay"] == 1


def test_a_corrupted_message_fails_its_checksum_and_keeps_its_shape() -> None:
    sim = _sim()
    net = sim.network
    net.replay_q20, net.corrupt_q20 = 0, 1 << 20
    net.countdown = 1
    sent = seal((PING, 0, ("k", 7, None, True), b"\x01\x02", "value"))
    net.send(0, 2, sent)
    _drain(sim)
    [(_, got)] = _server(sim, 2).got
    assert got != sent and got[:2] == sent[:2] and len(got) == len(sent)
    assert [type(x) for x in got] == [type(x) for x in sent]
    assert unseal(got) is None and unseal(sent) == sent[:-1]
    assert sim.fault_counts["corrupt"] == 1


def test_corrupt_changes_exactly_one_leaf_of_the_payload() -> None:
    rng = Rng(5)
    msg = (3, 1, (("a", 1), ("b", 2)), [True, None], "xyz", 42)
    for _ in range(200):
        changed, where = corrupt(msg, rng)
        assert changed[:2] == msg[:2] and where.startswith("field ")
        flat = [repr(x) for x in (changed[2], changed[3], changed[4], changed[5])]
        assert flat != [repr(x) for x in (msg[2], msg[3], msg[4], msg[5])]
        assert changed[3][1] is None  # None leaves are never changed
    assert corrupt((3, 1), rng) == ((3, 1), "nothing to corrupt")


def test_no_corruption_for_a_system_without_message_checksums() -> None:
    class Plain(Probe):
        message_checksums = False

    sim = Simulation(1, RunOptions(), Plain())
    assert sim.plan.corrupt or sim.plan.corrupt_q20 == 0
    assert sim.network.corrupt_q20 == 0


def test_seal_and_unseal_round_trip_and_reject_anything_changed() -> None:
    msg = (1, 4, "k", None, (1, 2), 3.5)
    sealed = seal(msg)
    assert unseal(sealed) == msg
    assert unseal((*msg, sealed[-1] ^ 1)) is None
    assert unseal((1, 4, "K", None, (1, 2), 3.5, sealed[-1])) is None
    assert unseal((1, 4, "\ud800", sealed[-1])) is None  # a leaf that cannot even encode


# ---- partitions ---------------------------------------------------------------------------------
def _blocked(sim: Simulation, src: int, dst: int) -> bool:
    return bool(sim.network.blocked[src * sim.nodes_total + dst])


def _partition_with(sim: Simulation, style: int) -> tuple[int, str]:
    """Start partitions until one of `style` (a fresh seed stream each time); its id and detail."""
    plan = sim.plan
    plan.partition_us_max = 1_000_000
    for attempt in range(200):
        plan.bridge_ppm = 1_000_000 if style == BRIDGE else 0
        plan.partition_clients_ppm = 1_000_000 if style in (CLIENT_CUT, PEERS_CUT) else 0
        before = len(sim.records)
        sim.network.partition(Rng(attempt))
        record = sim.records[before]
        if record[2] == 19 and record[3] == style:
            return record[4], sim.details[before]
        sim.network.heal(record[4])
    raise AssertionError("style never drawn")


def test_partitions_stack_and_each_heals_its_own_paths() -> None:
    sim = _sim()
    first, _ = _partition_with(sim, PEERS_CUT)
    second, _ = _partition_with(sim, PEERS_CUT)
    assert len(sim.network.partitions) == 2
    cut_first = set(sim.network.partitions[first])
    cut_second = set(sim.network.partitions[second])
    sim.network.heal(first)
    assert all(sim.network.blocked[p] for p in cut_second)
    assert all(not sim.network.blocked[p] for p in cut_first - cut_second)
    sim.network.heal(second)
    sim.network.heal(second)  # healing twice is harmless
    assert not any(sim.network.blocked)


def test_a_bridge_partition_is_not_transitive() -> None:
    sim = _sim()
    _, detail = _partition_with(sim, BRIDGE)
    # "#1 bridge rX: [a] <-/-> [b]"
    bridge = int(detail.split("bridge r")[1].split(":")[0])
    others = [r for r in range(3) if r != bridge]
    assert _blocked(sim, others[0], others[1]) and _blocked(sim, others[1], others[0])
    for r in others:
        assert not _blocked(sim, r, bridge) and not _blocked(sim, bridge, r)
    assert not any(_blocked(sim, c, r) for c in sim.client_nodes for r in range(3))


def test_client_and_server_cut_offs() -> None:
    sim = _sim()
    _, detail = _partition_with(sim, CLIENT_CUT)
    client = 3 + int(detail.split(" c")[1].split(" ")[0])
    cut = [r for r in range(3) if _blocked(sim, client, r)]
    assert cut and all(_blocked(sim, r, client) for r in cut)
    assert not any(_blocked(sim, a, b) for a in range(3) for b in range(3))
    sim.network.calm()
    assert not any(sim.network.blocked)
    _, detail = _partition_with(sim, PEERS_CUT)
    victim = int(detail.split(" r")[1].split(" ")[0])
    assert all(_blocked(sim, victim, r) for r in range(3) if r != victim)
    assert not any(_blocked(sim, victim, c) or _blocked(sim, c, victim) for c in sim.client_nodes)


# ---- gray slowdowns -----------------------------------------------------------------------------
def test_a_slow_link_multiplies_its_delay_and_heals() -> None:
    sim = _sim()
    net = sim.network
    path = 0 * sim.nodes_total + 1
    net.slow[path] = 100
    net.send(0, 1, seal((PING, 0, "slow")))
    net.send(0, 2, seal((PING, 0, "fast")))
    slow_at = next(t for t, _, kind, a, _ in sim.queue if kind == EV_DELIVER and a == 1)
    fast_at = next(t for t, _, kind, a, _ in sim.queue if kind == EV_DELIVER and a == 2)
    assert slow_at >= 100 * sim.plan.delay_base_us > fast_at - sim.plan.delay_jitter_us - 1


def test_slowdowns_overlap_largest_factor_wins_and_end() -> None:
    sim = _sim(faults=("gray",), seed=3)
    sim.plan.slow_factor_max = 1000
    sim.plan.slow_us_max = 1_000_000
    slowdowns = sim.slowdowns
    rng = Rng(9)
    while len(slowdowns.active) < 12:
        slowdowns.start(rng)
    for kind, factor, targets in slowdowns.active.values():
        array = slowdowns.disk if kind == 0 else sim.network.slow
        assert all(array[t] >= factor >= 10 for t in targets)
    slowdowns.calm()
    assert slowdowns.disk == [1, 1, 1] and set(sim.network.slow) == {1}
    assert sim.fault_counts["slow_end"] == 12


def test_a_slow_disk_multiplies_write_latency() -> None:
    sim = _sim()
    sim.slowdowns.disk[0] = 1000
    sim.storage.disks[0].write(1, b"x")
    sim.storage.disks[1].write(1, b"x")
    times = {b[0]: t for t, _, _, _, b in sim.queue if isinstance(b, tuple)}
    assert len(sim.queue) == 2
    slow, fast = sorted(t for t, *_ in sim.queue)[::-1]
    assert slow >= 1000 * sim.plan.write_latency_us_min and fast <= sim.plan.write_latency_us_max
    assert times


# ---- freezing pauses ----------------------------------------------------------------------------
def test_a_paused_server_holds_messages_and_completions_until_it_resumes() -> None:
    sim = _sim()
    sim.paused[1] = True
    net = sim.network
    for n in range(3):
        net.send(0, 1, seal((PING, 0, f"a{n}")))
        net.send(2, 1, seal((PING, 2, f"b{n}")))
    sim.storage.disks[1].write(1, b"entry")
    _drain(sim)
    server = _server(sim, 1)
    assert server.got == [] and server.done_writes == []
    assert len(sim.held[1]) == 7
    arrived = [item[1][2] for item in sim.held[1] if item[0] == "m"]
    assert sim.storage.disks[1].read(1) == b"entry"  # the disk finished the write meanwhile
    sim.nemesis.resume(1)
    got = [msg[2] for _, msg in server.got]
    assert sorted(got) == ["a0", "a1", "a2", "b0", "b1", "b2"]
    for source in "ab":  # each source's messages in arrival order
        assert [g for g in got if g[0] == source] == [g for g in arrived if g[0] == source]
    assert [slot for _, slot, _ in server.done_writes] == [1]
    assert sim.held[1] == []


def test_a_crash_while_paused_drops_what_was_held_and_truncate_cancels_completions() -> None:
    sim = _sim()
    sim.paused[1] = True
    sim.network.send(0, 1, seal((PING, 0, "lost")))
    disk = sim.storage.disks[1]
    disk.write(1, b"one")
    disk.write(2, b"two")
    _drain(sim)
    assert len(sim.held[1]) == 3
    disk.truncate(1)
    assert sorted(h[0] for h in sim.held[1]) == ["m", "w"]
    assert [h[1][1] for h in sim.held[1] if h[0] == "w"] == [1]
    sim.nemesis.crash(1)
    assert sim.held[1] == []


def test_a_full_receive_buffer_drops_the_rest() -> None:
    sim = _sim()
    sim.paused[0] = True
    for n in range(HOLD_MAX + 5):
        sim.hold(0, (PING, 1, n))
    assert len(sim.held[0]) == HOLD_MAX


# ---- clocks -------------------------------------------------------------------------------------
def test_drift_changes_keep_the_monotonic_clock_continuous_and_jumps_move_only_the_wall_clock(
) -> None:
    sim = _sim(faults=("clock", "time"), seed=4)
    clocks = sim.clocks
    clocks.spread_ppm = 100_000
    rng = Rng(2)
    now = 0
    last = clocks.monotonic_us(0, 0)
    for step in range(50):
        now += 37_000
        before = clocks.monotonic_us(0, now)
        drift = clocks.change_drift(0, now, rng)
        assert abs(drift) <= 100_000
        assert clocks.monotonic_us(0, now) == before >= last
        assert clocks.tick_us[0] == TICK_US + TICK_US * drift // 1_000_000
        last = before
        wall, mono = clocks.wall_clock_us(0, now), clocks.monotonic_us(0, now)
        jump = clocks.jump(0, 5_000_000, rng)
        assert jump != 0 and abs(jump) <= 5_000_000
        assert clocks.wall_clock_us(0, now) == wall + jump
        assert clocks.monotonic_us(0, now) == mono
        del step


def test_env_clocks_of_clients_are_virtual_time() -> None:
    sim = _sim()
    env = sim.cluster.env  # type: ignore[attr-defined]
    sim.now = 123_456
    assert env.monotonic_us(3) == env.wall_clock_us(3) == 123_456


def test_time_faults_fire_and_change_ticks_in_a_run() -> None:
    kinds: Counter[str] = Counter()
    for seed in range(20):
        kinds.update(simulate(seed, RunOptions(faults=("time",)), VSR).fault_counts)
    assert kinds["clock_jump"] > 0 and kinds["clock_drift"] > 0
    assert set(kinds) <= {"clock_jump", "clock_drift"}


# ---- clients ------------------------------------------------------------------------------------
def test_a_crashed_client_restarts_with_its_budget_and_a_new_history_process() -> None:
    sim = _sim()
    client: ProbeClient = sim.nodes[3]
    budget = client.budget
    assert client is not None
    client.call()
    client.finish()
    client.call()  # left open by the crash
    sim.nemesis.crash_client(3)
    assert sim.nodes[3] is None
    sim.nemesis.restart_client(3)
    again: ProbeClient | None = sim.nodes[3]
    assert again is not None and again.incarnation == 1 and again.budget == budget - 2
    assert sim.cluster.restarted == [(0, 1, budget - 2)]  # type: ignore[attr-defined]
    again.call()
    again.finish()
    processes = [op.process for op in sim.history_ops()]
    assert processes[0] == processes[1] == 0 and processes[2] == sim.plan.clients
    assert sim.history_ops()[1].return_us is None


def test_clients_of_a_cluster_without_restart_client_never_crash() -> None:
    for seed in range(10):
        sim = Simulation(seed, RunOptions(faults=("clients",)), Probe(restarts=False))
        assert not sim.client_restarts


# ---- cluster shapes -----------------------------------------------------------------------------
def test_systems_declare_their_sizes_and_core() -> None:
    class Even(Probe):
        cluster_sizes = (2, 4, 6)

        def core_size(self, replicas: int) -> int:
            return replicas - 1

    sizes: Counter[int] = Counter()
    for seed in range(120):
        sim = Simulation(seed, RunOptions(), Even())
        sizes[sim.n] += 1
        assert len(sim.plan.core) == sim.n - 1  # the servers the liveness phase heals
        assert sim.storage.f == 1  # the atlas: at most one damaged copy of a sector
    assert set(sizes) == {2, 4, 6}


def test_the_default_sizes_draw_as_before() -> None:
    """Sizes 1, 3, 5 (the default) are drawn exactly as before other sizes existed."""
    for seed in range(50):
        rng = Rng(seed)
        roll = Rng(seed).below(100)
        plan = FaultPlan(rng, FAULT_CLASSES, TICK_US)
        assert plan.replicas == (1 if roll < 15 else 3 if roll < 65 else 5)


def test_later_classes_never_move_the_first_draws() -> None:
    old = ("network", "crash", "storage", "clock")
    for seed in range(30):
        first = FaultPlan(Rng(seed), old, TICK_US, rng2=Rng(seed + 1))
        every = FaultPlan(Rng(seed), FAULT_CLASSES, TICK_US, rng2=Rng(seed + 1))
        for name in ("replicas", "clients", "request_budget", "delay_base_us", "loss_q20",
                     "crash_ppm", "core", "drift_ppm", "offset_us", "torn_ppm"):
            assert getattr(first, name) == getattr(every, name), (seed, name)
        assert first.partitions_max == 1 and not first.replay_q20 and not first.slow_ppm


@pytest.mark.parametrize(("sizes", "message"), [
    ((), "at least one"), ((3, 3), "distinct"), ((8,), "not one of"), ((0,), "not one of"),
])
def test_bad_cluster_shapes_are_refused(sizes: tuple[int, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_cluster_shape(sizes, lambda n: n // 2 + 1)
    with pytest.raises(ValueError, match="core_size"):
        check_cluster_shape((3,), lambda n: n + 1)
