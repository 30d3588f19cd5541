"""The engine's event queue entries: `(time_us, sequence, kind, a, b)` in a heap.

The sequence number (one counter per run) breaks ties, so events at the same microsecond run in
the order they were scheduled. The frequent kinds have their own branch in the engine's loop;
everything else is `EV_CALL`: `b(a)` at that time (`Simulation.schedule`).
"""

from __future__ import annotations

Event = tuple[int, int, int, int, object]

EV_DELIVER = 0  # a: destination node, b: the message
EV_TICK = 1  # a: server, b: its incarnation (a crashed incarnation's timer chain ends)
EV_CLIENT_TICK = 2  # a: client node, b: None
EV_DISK = 3  # a: server, b: (incarnation, write id)
EV_CALL = 4  # a: argument, b: a callable taking it
