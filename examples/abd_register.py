"""An example system plugin: a replicated register store with ABD quorums (Attiya, Bar-Noy, Dolev).

Run it with voprd's simulation engine (examples/ must be importable, e.g. PYTHONPATH=examples):

    voprd --once --seed 3 --target abd_register:AbdRegister -v
    voprd --seed 0 -n 200 --target abd_register:AbdRegister
    voprd selftest --target abd_register:AbdRegister

It is deliberately unlike the builtin VSR: no leader, no log, no view changes. Each key is a
register replicated on every server as a (tag, value) pair, where a tag is (timestamp, writer node,
writer incarnation). Clients run the protocol themselves, against any majority:

- write(v): ask a majority for their tags (QUERY), pick the highest timestamp t, then STORE
  ((t + 1, my node, my incarnation), v) until a majority has acknowledged it;
- read: QUERY a majority, take the highest (tag, value), and write it back (STORE) to a majority
  before returning it, so no later read can return anything older.

A server adopts any higher tag it is sent, acknowledges a STORE only once the tag is durable on its
disk (one sealed sector per key, at most one write in flight per sector) and recorded in its
superblock (an index of every key's floor: the oldest tag its sector may hold, which never goes
down; in sealed copies with a sequence number: the newest copy that verifies wins), and gossips its
registers so the servers converge. At a restart a key is damaged when its sector fails to read or
verify (the seal's checksum catches corruption, torn and misplaced data), or holds an older tag
than its floor (a lost write left a stale version); an empty disk (lost, or a late join: no
superblock) has every key damaged. A damaged key gets no QUERY answer until the server has
repaired it from a majority of the others (or re-read it intact). Failed writes (a bad sector, a
full disk) are retried on the next tick.

Every message carries a checksum (`voprd.sim.seal` / `unseal`, so `message_checksums = True`: the
engine may corrupt messages in flight and a corrupted one is dropped as if lost). It runs on 1 to 6
servers (majorities intersect for even counts too). A crashed client restarts as a new session:
its operation ids start at `incarnation << 20`, so a late reply to its previous incarnation never
matches, and its tags carry its incarnation, so its writes never share a tag with a write its
previous incarnation left in flight.

Invariants: `durability` (a server acknowledges a STORE only once its disk holds that tag or a
newer one), `agreement` (one value per (key, tag), wherever it is sent), `integrity` (a read returns
a written value or nothing), `convergence` (the liveness core ends with equal, durable registers
holding every acknowledged write); and linearizability of the client history against the `register`
model.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from voprd.sim import (
    SUPERBLOCK_COPIES,
    Damaged,
    Env,
    Recovery,
    System,
    Violation,
    seal,
    seal_sector,
    superblock_address,
    unseal,
    unseal_sector,
)
from voprd.sim.prng import Rng

# (timestamp, writer node, writer incarnation). The writer makes tags unique per write: two writers
# (or two incarnations of one client) that read the same highest timestamp store different values
# under different tags. (0, 0, 0) is the initial tag of every register.
Tag = tuple[int, int, int]
Register = tuple[Tag, str | None]
Message = tuple[Any, ...]

# Message types (item 0) and layouts; item 1 is always the sender.
QUERY = 0  # (QUERY, src, op_id, key)
QUERY_REPLY = 1  # (QUERY_REPLY, src, op_id, key, tag, value)
STORE = 2  # (STORE, src, op_id, key, tag, value)
STORE_ACK = 3  # (STORE_ACK, src, op_id, key, tag)
GOSSIP = 4  # (GOSSIP, src, ((key, tag, value), ...))
MESSAGE_NAMES = ("query", "query_reply", "store", "store_ack", "gossip")

INITIAL: Register = ((0, 0, 0), None)
UNKNOWN_TAG: Tag = (-1, 0, 0)  # in the superblock index: nothing known (an empty disk), repair it
GOSSIP_TICKS = 5
REPAIR_TICKS = 8

BUGS: Mapping[str, str] = MappingProxyType({
    "read_without_write_back":
        "a read returns the highest value of its query phase without writing it back to a "
        "majority, so a later read may still see the older value",
    "ack_before_fsync":
        "servers acknowledge a STORE as soon as they adopt it in memory, before it is durable",
    "writer_not_in_tag":
        "tags are timestamps alone, without the writer: two concurrent writers can store "
        "different values under the same tag",
})

_register_decoder = msgspec.msgpack.Decoder(tuple[tuple[int, int, int], str | None])
# The superblock: (sequence number, durable tag of every key in key order).
Index = tuple[int, tuple[Tag, ...]]
_index_decoder = msgspec.msgpack.Decoder(tuple[int, tuple[tuple[int, int, int], ...]])


def majority(servers: int) -> int:
    return servers // 2 + 1


class Server:
    """One incarnation of a server: registers in memory, on disk (one sector per key), in flight."""

    def __init__(self, cluster: AbdCluster, index: int, incarnation: int = 0) -> None:
        self.cluster = cluster
        self.env = cluster.env
        self.index = index
        self.disk = cluster.env.disk(index)
        self.keys = cluster.keys
        self.registers: dict[str, Register] = dict.fromkeys(self.keys, INITIAL)
        self.durable: dict[str, Register] = dict.fromkeys(self.keys, INITIAL)
        self.writing: dict[str, Register] = {}  # key -> what is in flight to its sector
        self.waiting: dict[str, list[tuple[int, int, Tag]]] = {}  # key -> (client, op_id, tag)
        self.damaged: set[str] = set()  # keys not to be served until repaired
        # key -> (id of the current repair round, replies from the others). Every round has a
        # fresh id, unique across this server's incarnations too: a reply replayed from an earlier
        # round may predate a write this server acknowledged, so only the current round counts.
        self.repairs: dict[str, tuple[int, dict[int, Register]]] = {}
        self.repair_rounds = incarnation << 20
        self.failed: set[str] = set()  # keys whose last write failed: written again next tick
        # What the index records for each key: the oldest tag its sector may hold. It never goes
        # down (a completed write raises it, and so does a repair, to the repaired tag), so every
        # tag this server acknowledged stays at or below it, across restarts: a restart that finds
        # less (a lost write left a stale version) repairs the key before serving it. UNKNOWN_TAG
        # (an empty disk) stays until the key is repaired: what the lost disk had acknowledged is
        # unknown, whatever has been written since.
        self.floor: dict[str, Tag] = dict.fromkeys(self.keys, INITIAL[0])
        self.seq = 0  # the sequence number of the superblock last written
        self.ticks = 0

    # ---- the superblock: the index of durable tags ---------------------------------------
    def format(self) -> None:
        """A new cluster: every register is initial."""
        self._write_index()

    def _write_index(self) -> None:
        """Record every key's floor, one copy at a time (a crash tears one at most)."""
        self.seq += 1
        tags = tuple(self.floor[k] for k in self.keys)
        data = msgspec.msgpack.encode((self.seq, tags))
        for copy in range(SUPERBLOCK_COPIES):
            self.disk.write_superblock(seal_sector(superblock_address(copy), data), copy)

    def _read_index(self) -> Index | None:
        """The newest superblock copy that verifies, or None (an empty disk)."""
        best: Index | None = None
        for copy in range(SUPERBLOCK_COPIES):
            data = unseal_sector(superblock_address(copy), self.disk.read_superblock(copy))
            if data is None or isinstance(data, Damaged):
                continue
            try:
                index: Index = _index_decoder.decode(data)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if len(index[1]) == len(self.keys) and (best is None or index[0] > best[0]):
                best = index
        return best

    # ---- recovery ------------------------------------------------------------------------
    def read_back(self) -> Recovery:
        """Read every register's sector after a crash (before acting: see `restart`)."""
        index = self._read_index()
        if index is None:  # an empty disk: lost, or joining late
            self.damaged = set(self.keys)
            self.floor = dict.fromkeys(self.keys, UNKNOWN_TAG)
            return Recovery(0, True, "empty disk: every register to repair")
        self.seq = index[0]
        for slot, key in enumerate(self.keys, start=1):
            self.floor[key] = recorded = index[1][slot - 1]
            register = self._read_register(slot, recorded)
            if register is None:
                self.damaged.add(key)  # lost (or stale): repair before serving the key
                continue
            self.registers[key] = self.durable[key] = register
        detail = f"registers={len(self.keys)} damaged={sorted(self.damaged)}"
        return Recovery(len(self.keys) - len(self.damaged), bool(self.damaged), detail)

    def _read_register(self, slot: int, recorded: Tag) -> Register | None:
        """The register in `slot` if it verifies and is not older than the index says."""
        data = self.disk.read_sealed(slot)
        register = INITIAL if data is None else (
            None if isinstance(data, Damaged) else _decode(data)
        )
        if register is None or recorded == UNKNOWN_TAG or register[0] < recorded:
            return None
        return register

    def _reread(self, key: str) -> None:
        """Read a damaged key's sector again: a read error may have cleared."""
        if self.floor[key] == UNKNOWN_TAG:
            return  # an empty disk: nothing on it to find
        register = self._read_register(self.keys.index(key) + 1, self.floor[key])
        if register is not None:
            self.damaged.discard(key)
            self.repairs.pop(key, None)
            self.durable[key] = register
            self._adopt(key, register)
            self._flush(key)  # a newer register adopted meanwhile goes to the disk

    def restart(self) -> None:
        if self.damaged:
            self.env.cover("damaged_restart")
        for key in sorted(self.damaged):
            self.env.note(self.index, "repair", self.keys.index(key), 0, f"{key} damaged")
            self._ask_repair(key)

    def _ask_repair(self, key: str) -> None:
        self.repair_rounds += 1
        round_id = -self.repair_rounds  # negative: never a client's operation id
        self.repairs[key] = (round_id, {})
        for server in range(self.env.replicas):
            if server != self.index:
                self.cluster.send(self.index, server, (QUERY, self.index, round_id, key))

    # ---- events --------------------------------------------------------------------------
    def on_message(self, sealed: Message) -> None:
        msg = unseal(sealed)
        if msg is None:
            return  # corrupted in flight: as if lost
        kind, src = msg[0], msg[1]
        if kind == QUERY:
            key = msg[3]
            if key not in self.damaged:
                tag, value = self.registers[key]
                self.cluster.send(self.index, src,
                                  (QUERY_REPLY, self.index, msg[2], key, tag, value))
        elif kind == STORE:
            _, _, op_id, key, tag, value = msg
            self._adopt(key, (tag, value))
            if tag <= self.durable[key][0] or "ack_before_fsync" in self.env.bugs:
                self._ack(src, op_id, key, tag)
            else:
                self.waiting.setdefault(key, []).append((src, op_id, tag))
        elif kind == QUERY_REPLY:  # an answer to a repair (servers query only to repair)
            _, _, round_id, key, tag, value = msg
            repair = self.repairs.get(key)
            if repair is None or repair[0] != round_id:
                return  # a late or replayed answer to an earlier round
            replies = repair[1]
            replies[src] = (tag, value)
            # A majority of the others meets every majority this server was part of in one
            # server at least, so the highest reply covers every write it acknowledged.
            if len(replies) >= majority(self.env.replicas):
                del self.repairs[key]
                self._adopt(key, max(replies.values(), key=lambda r: r[0]))
                self.damaged.discard(key)
                # It serves the repaired register from now on: until that is durable, a restart
                # must find the sector older than the index and repair the key again.
                self.floor[key] = max(self.floor[key], self.registers[key][0])
                self.env.cover("repair")
                self.env.note(self.index, "repair", self.keys.index(key), 1, f"{key} repaired")
        elif kind == GOSSIP:
            for key, tag, value in msg[2]:
                self._adopt(key, (tag, value))

    def on_tick(self) -> None:
        self.ticks += 1
        servers = self.env.replicas
        if servers > 1 and self.ticks % GOSSIP_TICKS == 0:
            peer = (self.index + 1 + self.ticks // GOSSIP_TICKS % (servers - 1)) % servers
            known = tuple((k, *self.registers[k]) for k in self.keys if k not in self.damaged)
            if known:
                self.cluster.send(self.index, peer, (GOSSIP, self.index, known))
        if self.ticks % REPAIR_TICKS == 0:
            for key in sorted(self.repairs):
                self._reread(key)
            for key in sorted(self.repairs):
                self._ask_repair(key)
        for key in sorted(self.failed):
            self.failed.discard(key)
            self._flush(key)

    def on_write_done(self, slot: int, ok: bool) -> None:
        key = self.keys[slot - 1]
        written = self.writing.pop(key)
        if not ok:
            self.failed.add(key)  # a bad sector or a full disk: write it again next tick
            return
        self.durable[key] = written
        if self.floor[key] != UNKNOWN_TAG:
            self.floor[key] = max(self.floor[key], written[0])
        self._write_index()  # durable once the index has it: a stale sector is then caught
        self.env.note(self.index, "durable", slot, written[0][0],
                      f"{key} {written}" if self.env.record_trace else "")
        waiting = self.waiting.pop(key, [])
        for client, op_id, tag in waiting:
            if tag <= written[0]:
                self._ack(client, op_id, key, tag)
            else:
                self.waiting.setdefault(key, []).append((client, op_id, tag))
        self._flush(key)  # a newer register goes to the disk next

    # ---- the register --------------------------------------------------------------------
    def _adopt(self, key: str, register: Register) -> None:
        self.cluster.check_agreement(self.index, key, register)
        if register[0] > self.registers[key][0]:
            self.registers[key] = register
            self._flush(key)

    def _ack(self, client: int, op_id: int, key: str, tag: Tag) -> None:
        self.cluster.check_ack(self.index, key, tag)
        self.cluster.send(self.index, client, (STORE_ACK, self.index, op_id, key, tag))

    def _flush(self, key: str) -> None:
        register = self.registers[key]
        if key in self.writing or register == self.durable[key]:
            return
        if key in self.damaged and register[0] < self.floor[key]:
            return  # never overwrite a damaged key's sector with an older register than it held
        self.writing[key] = register
        self.disk.write_sealed(self.keys.index(key) + 1, msgspec.msgpack.encode(register))


def _decode(data: bytes) -> Register | None:
    try:
        register: Register = _register_decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError):
        return None
    return register


class Client:
    """Issues reads and writes, one at a time, running both ABD phases itself."""

    def __init__(
        self, cluster: AbdCluster, node: int, rng: Rng, budget: int, incarnation: int = 0
    ) -> None:
        self.cluster = cluster
        self.env = cluster.env
        self.node = node
        self.rng = rng
        self.budget = budget
        self.incarnation = incarnation
        self.op_id = incarnation << 20  # a new session's ids never meet an older one's
        self.phase = ""  # "", "query" or "store"
        self.op: tuple[Literal["read", "write"], str, str | None] = ("read", "", None)
        self.history_index = -1
        self.replies: dict[int, Register] = {}
        self.acks: set[int] = set()
        self.store: Message = ()
        self.waiting_ticks = 0
        self.think_ticks = 0

    @property
    def idle(self) -> bool:
        return not self.phase

    @property
    def done(self) -> bool:
        return not self.phase and self.budget == 0

    def on_tick(self, may_start: bool) -> None:
        if self.phase:
            self.waiting_ticks += 1
            if self.waiting_ticks >= self.cluster.timeout_ticks:
                self.waiting_ticks = 0
                self.env.cover("retry")
                self.env.note(self.node, "retry", self.op_id, 0, f"{self.phase} timed out")
                self._broadcast()
            return
        if not may_start or self.budget <= 0:
            return
        if self.think_ticks > 0:
            self.think_ticks -= 1
            return
        self.budget -= 1
        self.op_id += 1
        key = self.rng.pick(self.cluster.keys)
        if self.rng.below(1_000_000) < self.cluster.read_ppm:
            self.op = ("read", key, None)
        else:
            written = f"{self.node}:{self.op_id}"
            self.op = ("write", key, written)
            self.cluster.written.add(written)
        name, key, value = self.op
        self.history_index = self.env.history_call(self.node, name, key, value)
        self.phase = "query"
        self.replies = {}
        self._broadcast()

    def _broadcast(self) -> None:
        msg = (QUERY, self.node, self.op_id, self.op[1]) if self.phase == "query" else self.store
        for server in range(self.env.replicas):
            self.cluster.send(self.node, server, msg)

    def on_message(self, sealed: Message) -> None:
        msg = unseal(sealed)
        if msg is None or msg[2] != self.op_id:
            return  # a late reply to an earlier operation
        quorum = majority(self.env.replicas)
        if msg[0] == QUERY_REPLY and self.phase == "query":
            self.replies[msg[1]] = (msg[4], msg[5])
            if len(self.replies) < quorum:
                return
            tag, value = max(self.replies.values(), key=lambda r: r[0])
            name, key, new_value = self.op
            if name == "read" and len({reply[0] for reply in self.replies.values()}) > 1:
                self.env.cover("read_write_back")  # the quorum disagreed: the write-back matters
            if name == "write":
                # The writer is this session, not just this node: a crashed incarnation's write
                # may still be in flight with the same timestamp (it read the same quorum state).
                writer: tuple[int, int] = (self.node, self.incarnation)
                if "writer_not_in_tag" in self.env.bugs:
                    writer = (0, 0)
                tag, value = (tag[0] + 1, *writer), new_value
            elif "read_without_write_back" in self.env.bugs:
                self._finish(value, tag)
                return
            self.phase = "store"
            self.acks = set()
            self.waiting_ticks = 0
            self.store = (STORE, self.node, self.op_id, key, tag, value)
            self._broadcast()
        elif msg[0] == STORE_ACK and self.phase == "store":
            self.acks.add(msg[1])
            if len(self.acks) >= quorum:
                name, _, _ = self.op
                self._finish(self.store[5] if name == "read" else None, self.store[4])

    def _finish(self, output: str | None, tag: Tag) -> None:
        name, key, _ = self.op
        if name == "write":
            self.cluster.acked[key] = max(self.cluster.acked.get(key, INITIAL[0]), tag)
        self.phase = ""
        self.think_ticks = self.rng.between(0, self.cluster.think_ticks_max)
        self.env.history_return(self.history_index, output, tag[0], f"tag {tag}")


class AbdCluster:
    """One run: the keys and workload shape, the nodes, and the invariants."""

    def __init__(self, env: Env) -> None:
        self.env = env
        workload = env.stream("workload")
        self.keys = tuple(f"k{i}" for i in range(workload.between(1, 3)))
        self.read_ppm = workload.between(200_000, 800_000)
        self.think_ticks_max = workload.between(0, 4)
        self.timeout_ticks = workload.between(20, 50)
        self.written: set[str] = set()  # every value a client tried to write
        self.values: dict[tuple[str, Tag], str | None] = {}  # agreement: (key, tag) -> value
        self.acked: dict[str, Tag] = {}  # key -> highest tag a write returned with

    def start_server(self, index: int) -> Server:
        server = Server(self, index)
        server.format()
        return server

    def restart_server(self, index: int, incarnation: int) -> tuple[Server, Recovery]:
        server = Server(self, index, incarnation)
        return server, server.read_back()

    def client(self, index: int, budget: int) -> Client:
        node = self.env.replicas + index
        return Client(self, node, self.env.stream(f"client.{index}"), budget)

    def restart_client(self, index: int, incarnation: int, budget: int) -> Client:
        node = self.env.replicas + index
        return Client(self, node, self.env.stream(f"client.{index}.{incarnation}"), budget,
                      incarnation)

    def send(self, src: int, dst: int, msg: Message) -> None:
        self.env.send(src, dst, seal(msg))

    # ---- invariants ----------------------------------------------------------------------
    def check_agreement(self, server: int, key: str, register: Register) -> None:
        tag, value = register
        known = self.values.setdefault((key, tag), value)
        if known != value:
            raise Violation(
                "agreement",
                f"r{server} adopted {key}={value!r} under tag {tag}, which already holds {known!r}",
            )

    def check_ack(self, server: int, key: str, tag: Tag) -> None:
        """The server's last completed write of `key`'s sector (`Disk.written`: what it made
        durable, whatever faults did to the medium since) must hold `tag` or newer."""
        slot = self.keys.index(key) + 1
        data = unseal_sector(slot, self.env.disk(server).written(slot))
        register: Register | None = INITIAL  # a sector never written holds the initial register
        if data is not None:
            register = None if isinstance(data, Damaged) else _decode(data)
        if register is None or register[0] < tag:
            on_disk = "nothing readable" if register is None else f"tag {register[0]}"
            raise Violation(
                "durability", f"r{server} acknowledged {key} with tag {tag} but its disk holds "
                              f"{on_disk}",
            )

    def _server(self, index: int) -> Server | None:
        node: Server | None = self.env.nodes[index]
        return node

    def on_return(self, client: int, index: int, output: Any, tag: int) -> None:
        if output is not None and output not in self.written:
            raise Violation("integrity", f"c{client - self.env.replicas} read {output!r}, "
                                         "which no client wrote")

    def converged(self, core: tuple[int, ...]) -> str | None:
        servers = [self._server(s) for s in core]
        for index, server in zip(core, servers, strict=True):
            if server is None:
                return f"r{index} is down"
            if server.damaged or server.writing or server.registers != server.durable:
                return f"r{index} has registers damaged or not yet durable"
        first = servers[0]
        assert first is not None
        if any(s is not None and s.registers != first.registers for s in servers):
            return "core registers differ"
        for key, tag in self.acked.items():
            if first.registers[key][0] < tag:
                raise Violation("convergence", f"the core lost the acknowledged write of {key} "
                                               f"with tag {tag}")
        return None


class AbdRegister(System):
    name = "abd_register"
    bugs = BUGS
    model = "register"
    message_names = MESSAGE_NAMES
    cluster_sizes = (1, 2, 3, 4, 5, 6)
    message_checksums = True
    trace_kinds: Mapping[str, int] = MappingProxyType({"durable": 64, "repair": 65})
    # Protocol paths counted with env.cover (a seed's coverage; the daemon steers focus seeds).
    coverage_paths = ("read_write_back", "retry", "damaged_restart", "repair")

    def start(self, env: Env) -> AbdCluster:
        return AbdCluster(env)

    def describe_message(self, msg: Message) -> str:
        name = MESSAGE_NAMES[msg[0]]
        if msg[0] == GOSSIP:
            return f"{name} " + " ".join(f"{k}={tag}" for k, tag, _ in msg[2])
        detail = " ".join(repr(part) for part in msg[3:-1])  # the last: its checksum
        return f"{name} #{msg[2]} {detail}"
