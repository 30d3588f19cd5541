"""The PRNG: stable outputs, bounded helpers in range and unbiased enough, independent streams."""

from __future__ import annotations

from voprd.sim.prng import MASK64, Rng, Streams, splitmix64


def test_splitmix64_reference_vector() -> None:
    # Reference outputs of SplitMix64 from state 0 (Vigna's splitmix64.c).
    state, first = splitmix64(0)
    _, second = splitmix64(state)
    assert first == 0xE220A8397B1DCDAF
    assert second == 0x6E789E6AA1B965F4


def test_same_seed_same_sequence_and_different_seeds_differ() -> None:
    a, b, c = Rng(42), Rng(42), Rng(43)
    seq_a = [a.next_u64() for _ in range(100)]
    assert seq_a == [b.next_u64() for _ in range(100)]
    assert seq_a != [c.next_u64() for _ in range(100)]
    assert all(0 <= x <= MASK64 for x in seq_a)


def test_below_and_between_stay_in_range_and_cover_it() -> None:
    rng = Rng(7)
    counts = [0] * 6
    for _ in range(6000):
        value = rng.below(6)
        counts[value] += 1
    assert all(800 < count < 1200 for count in counts), counts
    values = {rng.between(3, 5) for _ in range(200)}
    assert values == {3, 4, 5}
    assert all(0.0 <= rng.float53() < 1.0 for _ in range(1000))


def test_chance_matches_probability() -> None:
    rng = Rng(1)
    hits = sum(rng.chance(250_000) for _ in range(20_000))
    assert 4_500 < hits < 5_500
    assert not any(rng.chance(0) for _ in range(1000))


def test_shuffled_is_a_permutation() -> None:
    rng = Rng(3)
    items = list(range(20))
    out = rng.shuffled(items)
    assert sorted(out) == items and out != items


def test_streams_are_independent_of_each_other() -> None:
    streams = Streams(99)
    network_alone = [streams.stream("network").next_u64() for _ in range(1)]
    storage = streams.stream("storage")
    for _ in range(50):
        storage.next_u64()  # draws in one stream do not move another
    network = streams.stream("network")
    assert network.next_u64() == network_alone[0]
    assert streams.stream("network").seed != streams.stream("storage").seed
    assert Streams(100).stream("network").seed != streams.stream("network").seed
