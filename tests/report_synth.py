"""Synthetic but realistic RunPictures for the report tests (deterministic in the seed).

A small VSR-shaped cluster: clients send requests to the primary, which prepares on the backups,
commits on a quorum of PrepareOk, replies and broadcasts Commit. Outputs follow the commit order,
so the history is linearizable by construction; scenarios then plant faults and failures:

- `pass`: a partition of one backup and a primary crash with a view change; linearizable.
- `linearizability`: as `pass`, plus one get that returns a stale value (the planted bug), and the
  explanation a checker gives for it.
- `liveness`: the partition never heals and a second replica crashes for good: requests pend and
  the run fails with kind `liveness`.

This is test data, not the simulator: it exists so the renderer can be tested before (and
independently of) a simulator trace adapter.
"""

from __future__ import annotations

import random
from typing import Literal

from voprd.report.model import (
    ClientOp,
    FaultEvent,
    Linearizability,
    LinExplanation,
    Message,
    Node,
    NodeEvent,
    RunConfig,
    RunPicture,
    Verdict,
    op_outcome,
)

Scenario = Literal["pass", "linearizability", "liveness"]
CLIENT_TIMEOUT_US = 8_000


def synthetic_picture(
    seed: int, scenario: Scenario = "pass", ops_count: int = 120, client_count: int = 3,
    keys: tuple[str, ...] = ("x", "y", "z"),
) -> RunPicture:
    rng = random.Random(seed)
    replica_count = 3
    nodes = [Node(name=f"replica {r}", kind="replica") for r in range(replica_count)]
    nodes += [Node(name=f"client {c}", kind="client") for c in range(client_count)]

    def client_node(c: int) -> int:
        return replica_count + c

    # Planned run length, from the mean op duration and think time.
    run_us = max(20_000, ops_count * 3_600 // client_count)
    part_start, part_end = int(run_us * 0.22), int(run_us * 0.45)
    crash_at, restart_at = int(run_us * 0.55), int(run_us * 0.70)
    view_change_done = crash_at + 6_000
    second_crash = int(run_us * 0.80)
    messages: list[Message] = []
    events: list[NodeEvent] = []
    faults: list[FaultEvent] = []

    def partitioned(node: int, time_us: int) -> bool:
        healed = scenario != "liveness" and time_us >= part_end
        return node == 2 and time_us >= part_start and not healed

    def down(node: int, time_us: int) -> bool:
        if node == 0 and crash_at <= time_us < restart_at:
            return True
        return scenario == "liveness" and node == 1 and time_us >= second_crash

    def send(src: int, dst: int, at_us: int, kind: str, detail: str) -> int | None:
        latency_us = rng.randint(150, 1_400)
        arrive = at_us + latency_us
        lost = partitioned(src, at_us) or partitioned(dst, at_us) or down(dst, arrive)
        lost = lost or rng.random() < 0.01
        if lost:
            messages.append(Message(at_us, None, src, dst, kind, "dropped", detail))
            return None
        messages.append(Message(at_us, arrive, src, dst, kind, "delivered", detail))
        return arrive

    # Plan the client operations (call times), then execute them in commit order.
    planned: list[tuple[int, int, str, str, str | None, str | None]] = []
    per_client = max(1, ops_count // client_count)
    for c in range(client_count):
        t = rng.randint(0, 2_000)
        for _ in range(per_client):
            t += rng.randint(300, 4_000)
            key = keys[rng.randrange(len(keys))]
            kind = rng.choice(["get", "get", "put", "append", "cas"])
            value = None if kind == "get" else str(rng.randint(0, 9))
            expected = str(rng.randint(0, 9)) if kind == "cas" else None
            planned.append((t, c, key, kind, value, expected))
            t += 3_000
    planned.sort(key=lambda p: (p[0], p[1]))
    state = dict.fromkeys(keys, "")
    ops: list[ClientOp] = []
    commit_number = 0
    client_free_at = [0] * client_count
    commit_order: list[tuple[int, int]] = []  # (commit time, op id)
    for op_id, (planned_call, c, key, kind, value, expected) in enumerate(planned):
        call = max(planned_call, client_free_at[c])
        primary = 1 if call >= crash_at else 0
        view = 1 if call >= crash_at else 0
        arrive = send(client_node(c), primary, call, "request", f"{kind} {key}")
        quorum_at: int | None = None
        if arrive is not None and not down(primary, arrive) and not (
            primary == 1 and arrive < view_change_done
        ):
            acks: list[int] = []
            for backup in range(replica_count):
                if backup == primary or down(backup, arrive):
                    continue
                detail = f"view {view} op {commit_number + 1}"
                got = send(primary, backup, arrive, "prepare", detail)
                if got is not None:
                    back = send(backup, primary, got + 40, "prepare_ok", f"op {commit_number + 1}")
                    if back is not None:
                        acks.append(back)
            if acks:
                quorum_at = min(acks)
        if quorum_at is None:
            ops.append(ClientOp(
                id=op_id, process=c, key=key, op=kind, call_us=call, value=value,
                expected=expected, outcome="unknown",
            ))
            client_free_at[c] = call + CLIENT_TIMEOUT_US
            continue
        commit_number += 1
        commit_order.append((quorum_at, op_id))
        events.append(NodeEvent(quorum_at, primary, "commit", f"op {commit_number}"))
        for backup in range(replica_count):
            if backup != primary:
                got = send(primary, backup, quorum_at + 10, "commit", f"commit {commit_number}")
                if got is not None:
                    events.append(NodeEvent(got, backup, "commit", f"op {commit_number}"))
        reply = send(primary, client_node(c), quorum_at + 20, "reply", f"op {commit_number}")
        output: str | bool | None = None
        if kind == "get":
            output = state[key]
        elif kind == "put":
            state[key] = value or ""
        elif kind == "append":
            state[key] += value or ""
        else:
            output = state[key] == expected
            if output:
                state[key] = value or ""
        if reply is None:
            ops.append(ClientOp(
                id=op_id, process=c, key=key, op=kind, call_us=call, value=value,
                expected=expected, outcome="unknown",
            ))
            client_free_at[c] = call + CLIENT_TIMEOUT_US
        else:
            ops.append(ClientOp(
                id=op_id, process=c, key=key, op=kind, call_us=call, return_us=reply,
                value=value, expected=expected, output=output,
                outcome=op_outcome(kind, reply, output),
            ))
            client_free_at[c] = reply

    # Faults and the replica events that go with them.
    faults.append(FaultEvent(
        id=0, kind="partition", start_us=part_start,
        end_us=None if scenario == "liveness" else part_end, open_ended=scenario == "liveness",
        nodes=[2], detail="isolate-one: replica 2 | replicas 0,1 (symmetric)",
    ))
    faults.append(FaultEvent(
        id=1, kind="crash", start_us=crash_at, end_us=restart_at, nodes=[0],
        detail="replica 0 crashed; 2 unsynced log entries lost",
    ))
    events.append(NodeEvent(crash_at, 0, "crash", "unsynced writes lost"))
    events.append(NodeEvent(restart_at, 0, "restart", "recovering from durable log"))
    for r in (1, 2):
        if not partitioned(r, crash_at + 4_000):
            events.append(NodeEvent(crash_at + 4_000, r, "start_view_change", "view 1"))
    send(1, 2, crash_at + 4_000, "start_view_change", "view 1")
    send(2, 1, crash_at + 4_100, "do_view_change", "view 1, op 17")
    events.append(NodeEvent(view_change_done, 1, "view_change", "view 1 (primary)"))
    send(1, 2, view_change_done, "start_view", "view 1")
    events.append(NodeEvent(view_change_done + 900, 2, "view_change", "view 1"))
    send(0, 1, restart_at + 300, "recovery", "nonce 7")
    send(1, 0, restart_at + 900, "recovery_response", "view 1")
    events.append(NodeEvent(restart_at + 2_000, 0, "state_transfer", "from replica 1"))
    faults.append(FaultEvent(
        id=2, kind="storage", start_us=int(run_us * 0.33), nodes=[1],
        detail="read corruption at log slot 12 (checksum mismatch; repaired from replica 0)",
    ))
    faults.append(FaultEvent(
        id=3, kind="clock", start_us=0, end_us=run_us, nodes=[2],
        detail="offset +3 ms, drift 40 ppm",
    ))
    if scenario == "liveness":
        faults.append(FaultEvent(
            id=4, kind="crash", start_us=second_crash, open_ended=True, nodes=[1],
            detail="replica 1 crashed and was not restarted",
        ))
        events.append(NodeEvent(second_crash, 1, "crash", "not restarted"))
    events.sort(key=lambda e: (e.time_us, e.node))
    end_us = max([run_us] + [o.return_us or o.call_us for o in ops])

    lin = Linearizability(verdict="linearizable", model="kv")
    bugs: list[str] = []
    status: Literal["ok", "failed"] = "ok"
    kind: str | None = None
    invariant: str | None = None
    message: str | None = None
    failure_us: int | None = None
    if scenario == "linearizability":
        # Plant a stale read: the first returned get, after at least two writes committed on its
        # key, returns the value from before the last of them.
        commit_time = dict((op_id, t) for t, op_id in commit_order)
        by_id = {o.id: o for o in ops}
        for t, op_id in sorted(commit_order):
            op = by_id[op_id]
            if op.op != "get" or op.return_us is None:
                continue
            writes = [
                (wt, w) for wt, w in sorted(commit_order)
                if wt < t and by_id[w].key == op.key and by_id[w].op in ("put", "append")
                and by_id[w].return_us is not None and by_id[w].return_us < op.call_us
            ]
            if len(writes) < 2:
                continue
            prefix = [
                w for wt, w in sorted(commit_order) if wt < t and by_id[w].key == op.key
            ]
            replay = ""
            stale = ""
            for w in prefix:
                prior = replay
                o = by_id[w]
                if o.op == "put":
                    replay = o.value or ""
                elif o.op == "append":
                    replay += o.value or ""
                elif o.op == "cas" and o.output is True:
                    replay = o.value or ""
                if w == writes[-1][1]:
                    stale = prior
            if stale == replay:
                continue
            index = ops.index(op)
            ops[index] = ClientOp(
                id=op.id, process=op.process, key=op.key, op="get", call_us=op.call_us,
                return_us=op.return_us, output=stale, outcome="ok",
            )
            lin = Linearizability(
                verdict="not_linearizable", model="kv",
                explanations=[LinExplanation(
                    key=op.key, prefix=prefix, blocker=op.id, state_after_prefix=replay,
                )],
            )
            status, kind, invariant = "failed", "invariant", "linearizability"
            message = (
                f"history not linearizable on key {op.key!r}: get by process {op.process} "
                f"returned {stale!r} after {len(prefix)} operations left {replay!r}"
            )
            bugs = ["backup_serves_reads"]
            del commit_time
            break
        else:
            raise AssertionError("no get suitable for a stale read; use another seed")
    elif scenario == "liveness":
        status, kind, invariant = "failed", "liveness", "liveness"
        pending = sum(o.return_us is None for o in ops)
        message = (
            f"liveness: {pending} client requests still pending and the core (replicas 0, 1) "
            "did not converge within 10000 ms after healing"
        )
        failure_us = end_us
    reproduce = f"voprd --once --seed {seed}" + "".join(f" --bug {b}" for b in bugs) + " -v"
    return RunPicture(
        config=RunConfig(
            seed=seed, faults=["network", "crash", "storage", "clock"], bugs=bugs,
            max_events=100_000, replica_count=replica_count, client_count=client_count,
            drawn={
                "network.loss": "0.010", "network.delay_us": "150..1400 uniform",
                "crash.probability": "0.002", "partition.mode": "isolate-one",
                "workload": "get 40%, put 20%, append 20%, cas 20%",
            },
        ),
        verdict=Verdict(
            status=status, kind=kind, invariant=invariant, message=message,
            failure_us=failure_us, events=len(messages) * 2 + len(events),
            simulated_time_us=end_us, trace_hash=f"{seed * 2654435761 % 2**64:016x}",
        ),
        reproduce=reproduce,
        nodes=nodes,
        ops=ops,
        linearizability=lin,
        messages=messages,
        node_events=events,
        faults=faults,
    )
