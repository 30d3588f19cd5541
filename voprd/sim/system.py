"""The system interface: what a replicated system implements to run in the simulation engine.

The engine (`voprd.sim.engine.Simulation`) owns time, randomness, the network, the disks, the
faults, the phases, the trace and the client history; it knows nothing of any one system. A system
is four small pieces (docs/writing-a-plugin.md walks through a complete one):

- `System` (subclass it): the static description. `name`; `bugs` (planted bug name ->
  description); `model` (the linearizability model of its client history: a name in
  `voprd.check.models.MODELS` or a `Model` object); `message_names`; `trace_kinds` (its own trace
  kinds and their codes); `coverage_paths` (the protocol paths it counts with `env.cover`);
  `describe_message`; the cluster shapes it supports (`cluster_sizes`, `core_size`); whether it
  checksums its messages (`message_checksums`); and `start(env) -> Cluster`, called once per run.
- `Cluster`: the system's side of one run. It makes the nodes (`start_server`, `restart_server`,
  `client`, and optionally `restart_client` for a client that crashed) and holds the
  invariants: the hooks the engine calls (`on_return` when a client operation returns,
  `converged` in the liveness phase); the system's own nodes report anything else (commits,
  status changes) to it directly, and it raises `Violation` when an invariant fails.
- `Server` (node ids 0..replicas-1): `on_message`, `on_tick`, `on_write_done` and, after a crash,
  `restart`. It reads its durable state back from its `Disk` (`env.disk(index)`), which returns
  raw, unverified bytes (or use the disk's sealed helpers).
- `Client` (node ids replicas..replicas+clients-1): `on_message`, `on_tick(may_start)`, `idle` and
  `done`. It records each operation it issues with `env.history_call` / `env.history_return`.

Messages are tuples (a `NamedTuple` is fine) whose item 0 is the message type (an index into
`System.message_names`) and item 1 the sender's node id; nodes must treat them as immutable.

Determinism rules for systems: draw randomness only from `env.stream(name)` (never `random`, the
clock, `hash()` of str/bytes, or set/dict iteration order of such keys); keep no state outside the
objects the engine hands you (a run is a function of the seed); do not perform I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple, Protocol

from voprd.check.history import OpName
from voprd.check.models import Model, get_model
from voprd.sim.faults import majority
from voprd.sim.prng import Rng

Message = tuple[Any, ...]
Output = str | bool | None


class Violation(Exception):
    """An invariant failed: raise it from a system's checks; carries the invariant's name."""

    def __init__(self, invariant: str, message: str) -> None:
        super().__init__(message)
        self.invariant = invariant
        self.message = message


class Damaged:
    """The type of `DAMAGED`: what a disk read returns when the device reports a read error (a
    torn write, a latent sector error, a bad sector), and what a sealed read returns for a sector
    that fails its checksum."""

    _instance: Damaged | None = None

    def __new__(cls) -> Damaged:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "DAMAGED"


DAMAGED = Damaged()


class Disk(Protocol):
    """One server's simulated disk (it outlives the server's crashes): numbered sectors of raw
    bytes plus a superblock area of `SUPERBLOCK_COPIES` copies (`voprd.sim.storage`).

    The engine stores exactly what is written and returns what the medium holds: it verifies
    nothing. Faults change what a read returns: silent corruption (other bytes), a stale version of
    the sector, another sector's data (a misdirected write), nothing (a lost write), or `DAMAGED`
    (the device reports a read error). A system verifies what it reads itself, or uses the sealed
    helpers (`write_sealed`/`read_sealed`), which add a checksum over the data and its address.

    `write` is asynchronous: the server's `on_write_done(slot, ok)` follows after a latency (ok is
    False on a write error, a full disk or a bad sector: write again later). Until then the write is
    unsynced: a crash loses it (or tears it). `read`, `truncate`, the superblock and the
    atomic-update marks are synchronous and durable at once. The fault atlas spreads damage per
    sector across servers, at most f = (servers - 1) // 2 damaged copies of a sector at a time.
    """

    def write(self, slot: int, data: bytes, settled: int = 0) -> None:
        """Write `data` to sector `slot` (>= 1). `settled`: sectors 1..settled hold data the
        system will never rewrite (e.g. committed log entries); the only ones a misdirected write
        may land on. 0 (the default) keeps every write where it was sent."""
        ...

    def read(self, slot: int) -> bytes | Damaged | None:
        """What the medium returns for sector `slot`, unverified: bytes (possibly corrupt, stale
        or another sector's), None if never written (or truncated, or the write never reached
        it), `DAMAGED` on a read error."""
        ...

    def write_sealed(self, slot: int, data: bytes, settled: int = 0) -> None:
        """`write` of `data` framed with a checksum over the data and the address `slot`."""
        ...

    def read_sealed(self, slot: int) -> bytes | Damaged | None:
        """`read` of a sealed sector: its data, None if never written, `DAMAGED` on a read error
        or a checksum mismatch (corrupt, torn, misdirected). A stale version still verifies."""
        ...

    def truncate(self, slot_count: int) -> None:
        """Drop every sector after `slot_count` and cancel the writes in flight to them."""
        ...

    def read_superblock(self, copy: int = 0) -> bytes | Damaged | None:
        """Superblock copy `copy` (0..SUPERBLOCK_COPIES-1), raw like `read`."""
        ...

    def write_superblock(self, data: bytes, copy: int = 0) -> None:
        """Replace superblock copy `copy`, synchronously. A crash may interrupt it (the server
        dies inside this call: the copy is torn or not written, the rest of the handler never
        runs), so keep several copies, write them one at a time, and read back the newest copy
        that verifies."""
        ...

    def begin_atomic(self) -> None:
        """Start (or continue) an atomic update: until it is switched in, a crash reverts every
        sector to its state at the first `begin_atomic` (as a log written to a second area and
        switched by the superblock)."""
        ...

    def end_atomic(self) -> None:
        """The atomic update is complete: the next superblock copy that is written intact
        switches it in (a crash before that still reverts it), so the superblock and the sectors
        it describes change together."""
        ...

    def written(self, slot: int) -> bytes | None:
        """The data of the last write to `slot` that completed ok, whatever faults did to the
        medium since: for invariant checks only (did the system make it durable?)."""
        ...


class Env(Protocol):
    """What the engine offers a system for one run (`System.start(env)`)."""

    seed: int
    bugs: frozenset[str]
    replicas: int  # servers are nodes 0..replicas-1
    clients: int  # clients are nodes replicas..replicas+clients-1
    timeout_base_ticks: int  # a per-seed protocol timeout scale (10 to 25 ticks of ~10 ms)
    record_trace: bool  # a readable trace is recorded: worth formatting `note` details

    @property
    def nodes(self) -> Sequence[Any]:
        """The live node objects by node id (None while a server is down)."""
        ...

    @property
    def now(self) -> int:
        """Virtual time, microseconds."""
        ...

    def monotonic_us(self, node: int) -> int:
        """The node's monotonic clock, microseconds: it drifts (a server's drift changes mid-run
        within the seed's spread, at most ±10%) but never jumps. Timers (ticks) follow it."""
        ...

    def wall_clock_us(self, node: int) -> int:
        """The node's wall clock: its monotonic clock plus an offset that jumps (forwards or
        backwards, by up to seconds) when the `clock` fault class steps it."""
        ...

    def stream(self, name: str) -> Rng:
        """The named PRNG stream of this seed (the engine's own names are refused)."""
        ...

    def send(self, src: int, dst: int, msg: Message) -> None: ...

    def disk(self, index: int) -> Disk: ...

    def note(self, node: int, kind: str, a: int = 0, b: int = 0, detail: str = "") -> None:
        """Record a trace event of a system kind (or `status`, `commit`, `retry`)."""
        ...

    def bound(self, name: str) -> None:
        """Report that an explicit limit was reached (listed in the result's bounds_reached). In
        the liveness phase it is the verdict `liveness` and ends the run."""
        ...

    def cover(self, path: str) -> None:
        """Count one pass through a protocol path (one of `System.coverage_paths`): the seed's
        coverage, which the daemon aggregates and steers its focus seeds by."""
        ...

    def history_call(
        self, client: int, op: OpName, key: str = "", value: str | None = None,
        expected: str | None = None,
    ) -> int:
        """Record the call of a client operation (fields of `voprd.check.history.HistoryOp`);
        returns its index for `history_return`."""
        ...

    def history_return(self, index: int, output: Output, tag: int = 0, note: str = "") -> None:
        """Record its return. `tag` is a system number passed on to `Cluster.on_return` (the
        VSR: the op number); `note` is shown in the readable trace."""
        ...


class Server(Protocol):
    def on_message(self, msg: Message) -> None: ...

    def on_tick(self) -> None: ...

    def on_write_done(self, slot: int, ok: bool) -> None: ...

    def restart(self) -> None:
        """Act on the durable state read back by `Cluster.restart_server` (after a crash)."""
        ...


class Client(Protocol):
    @property
    def idle(self) -> bool:
        """No operation outstanding."""
        ...

    @property
    def done(self) -> bool:
        """Idle, and nothing left to issue: when every client is done, the liveness phase starts."""
        ...

    def on_message(self, msg: Message) -> None: ...

    def on_tick(self, may_start: bool) -> None:
        """`may_start`: new operations may begin (the safety phase); retries always may."""
        ...


class Recovery(NamedTuple):
    """What a restarted server read back, for the trace's `restart` event."""

    items: int  # e.g. log entries recovered
    damaged: bool  # damage was detected
    detail: str


class Cluster(Protocol):
    def start_server(self, index: int) -> Server:
        """The server `index` at the start of the run, when the cluster is formed (empty disk:
        format it here if the system needs to tell a new cluster from a lost disk later)."""
        ...

    def restart_server(self, index: int, incarnation: int) -> tuple[Server, Recovery]:
        """A new server object for `index` after a crash, from what its disk holds (read it
        here; act on it only in `Server.restart`). Also for a server that joins late or whose
        disk was lost: its disk is then empty (no superblock), unlike at `start_server`."""
        ...

    def client(self, index: int, budget: int) -> Client:
        """Client `index` (node id replicas+index), which may issue `budget` operations."""
        ...

    # Optional (the engine crashes clients only of a cluster that has it):
    # def restart_client(self, index: int, incarnation: int, budget: int) -> Client:
    #     """Client `index` after a crash (its object was dropped; its open operation's outcome
    #     stays unknown): a new session, incarnation 1, 2, ..., with `budget` operations left."""

    def on_return(self, client: int, index: int, output: Output, tag: int) -> None:
        """Invariant hook: a client operation returned (after it is recorded)."""
        ...

    def converged(self, core: tuple[int, ...]) -> str | None:
        """Liveness phase: None when the `core` servers have converged, else why not (checked
        every 10 ms until a deadline). Raise `Violation` if they converged to a wrong state."""
        ...


class System:
    """Base class of a system plugin; see the module docstring. Override `start` at least."""

    name = "system"
    bugs: Mapping[str, str] = {}
    model: str | Model = "kv"
    message_names: Sequence[str] = ()
    trace_kinds: Mapping[str, int] = {}
    # The numbers of servers the system runs with (the seed draws one; 1 to 7).
    cluster_sizes: Sequence[int] = (1, 3, 5)
    # True: every message carries a checksum the receiver verifies (`voprd.sim.checksum`), so the
    # engine may corrupt messages in flight (the `corrupt` fault class); False: it never does.
    message_checksums = False
    # Protocol paths the system counts with `env.cover(path)` (view changes, recoveries, ...):
    # a seed's result carries the non-zero counts, in this order.
    coverage_paths: Sequence[str] = ()

    def start(self, env: Env) -> Cluster:
        raise NotImplementedError

    def core_size(self, replicas: int) -> int:
        """How many servers the system needs to make progress (its largest quorum): the liveness
        phase heals that many, and the fault atlas damages the storage of at most
        `replicas - core_size(replicas)` servers. Default: a majority."""
        return majority(replicas)

    def describe_message(self, msg: Message) -> str:
        """A short readable rendering of a message for the trace and the report."""
        return self.message_names[msg[0]]

    def describe_write(self, slot: int, landed: int, ok: bool) -> str:
        """The readable trace's text for a completed disk write."""
        where = "" if landed == slot else f" landed at {landed}"
        return f"slot={slot}{where} ok={ok}"

    def report_event(
        self, kind: str, node: int, detail: str, memo: dict[Any, Any]
    ) -> tuple[str, str] | None:
        """The HTML report's node event (kind, label) for a trace event of a system kind, or None
        to leave it out. `memo` is one dict per report, for state across events."""
        return kind, detail

    def validate_bugs(self, names: Sequence[str]) -> None:
        """Raise ValueError naming the first unknown planted bug."""
        unknown = [name for name in names if name not in self.bugs]
        if unknown:
            known = ", ".join(self.bugs) or "none"
            raise ValueError(
                f"unknown bug {unknown[0]!r} for system {self.name!r} (known: {known})"
            )

    def linearizability_model(self) -> Model:
        return get_model(self.model) if isinstance(self.model, str) else self.model
