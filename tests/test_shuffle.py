"""The C shuffle (microgpt_c/shuffle.py) against random.shuffle: the same
permutation and the same generator state after, in its verifying mode."""
import random

import pytest

from microgpt_c import shuffle as shuffle_module
from microgpt_c.shuffle import shuffle

# around the powers of two, where randbelow's bit count changes; the main job's 32,033
SIZES = [0, 1, 2, 3, 4, 5, 7, 8, 9, 31, 32, 33, 255, 256, 257, 1000, 1023, 1024, 1025, 32033]


@pytest.mark.parametrize("seed", range(12))
def test_the_c_shuffle_is_random_shuffle(seed):
    rng = random.Random(seed)
    for n in SIZES:
        for _ in range(rng.randrange(3)):  # start anywhere in the generator's block of 624 words
            rng.getrandbits(32)
        if seed % 3 == 0:
            rng.gauss(0, 1)  # and with a gaussian kept for later
        x = list(range(n))
        plain = random.Random()
        plain.setstate(rng.getstate())
        expected = list(x)
        plain.shuffle(expected)
        shuffle(rng, x, verify=True)
        assert x == expected and rng.getstate() == plain.getstate()
        shuffle(rng, x)  # and the unchecked way, from the same state as the plain one
        plain.shuffle(expected)
        assert x == expected and rng.getstate() == plain.getstate()


def test_the_checking_mode_catches_a_difference(monkeypatch):
    def off_by_one(rng, x):
        rng.getrandbits(32)
        x.reverse()

    monkeypatch.setattr(shuffle_module, "_c_shuffle", off_by_one)
    with pytest.raises(AssertionError, match="differs from random.shuffle"):
        shuffle(random.Random(1), list(range(10)), verify=True)


def test_a_subclass_draws_its_own_way():
    class Counting(random.Random):
        def random(self):  # so randbelow is built on random(), not getrandbits
            return super().random()

    a, b = Counting(5), Counting(5)
    x, y = list(range(50)), list(range(50))
    shuffle(a, x)
    b.shuffle(y)
    assert x == y and a.getstate() == b.getstate()
