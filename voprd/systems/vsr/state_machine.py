"""The replicated KV state machine: get/put/append/cas on string keys; a missing key reads ""."""

from __future__ import annotations

import zlib

from voprd.systems.vsr.messages import Operation

Result = str | bool | None


class KvStore:
    __slots__ = ("data", "state_hash")

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        # A running hash of every state transition: replicas that executed the same operations in
        # the same order have the same hash (used by the convergence invariant).
        self.state_hash = 0

    def apply(self, op_number: int, operation: Operation) -> Result:
        name, key, value, expected = operation
        data = self.data
        result: Result
        if name == "get":
            result = data.get(key, "")
        elif name == "put":
            assert value is not None
            data[key] = value
            result = None
        elif name == "append":
            assert value is not None
            data[key] = data.get(key, "") + value
            result = None
        elif name == "cas":
            assert value is not None and expected is not None
            if data.get(key, "") == expected:
                data[key] = value
                result = True
            else:
                result = False
        else:
            raise ValueError(f"unknown operation {name!r}")
        self.state_hash = zlib.crc32(f"{op_number}:{key}={data.get(key, '')}".encode(),
                                     self.state_hash)
        return result
