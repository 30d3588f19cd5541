"""A small PRNG of our own: SplitMix64 for seeding, xoshiro256** for the stream.

Python's `random.randrange/choice/shuffle` changed algorithms between releases; this generator is
pure integer arithmetic, so a seed's draws are identical on every CPython version and platform.
Named streams are derived from the root seed and a blake2b digest of the name (never `hash()`),
so adding draws in one component never reshuffles another's.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TypeVar

MASK64 = (1 << 64) - 1
T = TypeVar("T")


def splitmix64(state: int) -> tuple[int, int]:
    """One SplitMix64 step: returns (next_state, output)."""
    state = (state + 0x9E3779B97F4A7C15) & MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
    return state, z ^ (z >> 31)


def name_digest(name: str) -> int:
    """A stable 64-bit digest of a stream name (blake2b, independent of PYTHONHASHSEED)."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


class Rng:
    """xoshiro256** with integer-only helpers."""

    __slots__ = ("_s0", "_s1", "_s2", "_s3", "seed")

    def __init__(self, seed: int) -> None:
        assert seed >= 0
        self.seed = seed & MASK64
        state = self.seed
        words = []
        for _ in range(4):
            state, out = splitmix64(state)
            words.append(out)
        if not any(words):  # xoshiro must not start from the all-zero state
            words[0] = 1
        self._s0, self._s1, self._s2, self._s3 = words

    def next_u64(self) -> int:
        # xoshiro256** with the state words updated in place (fewer bytecodes than unpacking
        # and repacking all four: the engine's most called function).
        s0 = self._s0
        s1 = self._s1
        s2 = self._s2 ^ s0
        s3 = self._s3 ^ s1
        self._s0 = s0 ^ s3
        self._s1 = s1 ^ s2
        self._s2 = s2 ^ ((s1 << 17) & 0xFFFFFFFFFFFFFFFF)
        self._s3 = ((s3 << 45) | (s3 >> 19)) & 0xFFFFFFFFFFFFFFFF
        x = (s1 * 5) & 0xFFFFFFFFFFFFFFFF
        return ((((x << 7) | (x >> 57)) & 0xFFFFFFFFFFFFFFFF) * 9) & 0xFFFFFFFFFFFFFFFF

    def below(self, bound: int) -> int:
        """Uniform integer in [0, bound) (Lemire's multiply-shift with rejection)."""
        assert 0 < bound <= MASK64
        product = self.next_u64() * bound
        low = product & MASK64
        if low < bound:
            threshold = (MASK64 + 1 - bound) % bound
            while low < threshold:
                product = self.next_u64() * bound
                low = product & MASK64
        return product >> 64

    def between(self, low: int, high: int) -> int:
        """Uniform integer in [low, high] (inclusive)."""
        assert low <= high
        return low + self.below(high - low + 1)

    def chance(self, ppm: int) -> bool:
        """True with probability ppm / 1,000,000."""
        if ppm <= 0:
            return False
        return self.below(1_000_000) < ppm

    def float53(self) -> float:
        """Uniform float in [0, 1) from the top 53 bits."""
        return (self.next_u64() >> 11) * (1.0 / (1 << 53))

    def pick(self, items: Sequence[T]) -> T:
        assert items
        return items[self.below(len(items))]

    def shuffled(self, items: Sequence[T]) -> list[T]:
        """A Fisher-Yates shuffle of a copy of `items`."""
        out = list(items)
        for i in range(len(out) - 1, 0, -1):
            j = self.below(i + 1)
            out[i], out[j] = out[j], out[i]
        return out


class Streams:
    """One root seed split into named, independent streams."""

    __slots__ = ("seed",)

    def __init__(self, seed: int) -> None:
        self.seed = seed & MASK64

    def stream(self, name: str) -> Rng:
        _, mixed = splitmix64(self.seed ^ name_digest(name))
        return Rng(mixed)
