"""rng.shuffle(x) for a random.Random, in C (csrc/shuffle.c): the same
permutation and the same generator state after. The main job shuffles 32,033
names before it trains: 6-8 ms of its start-up in Python, 2-3 ms this way
(mostly Python's own work of moving the 32,033 strings).

It cannot differ: the C code takes the integer steps of CPython's shuffle on
a copy of the generator's state, and writes the state back. What it relies on
(how Random.shuffle draws) is CPython's code, not its documented promise, so
the first call compares the two on a small list and, if they ever differ,
leaves the work to random.shuffle from then on. verify=True compares every call
(the tests)."""
import functools
import operator
import random

from ._engine import ffi, lib


def _c_shuffle(rng, x):
    version, state, gauss_next = rng.getstate()
    mt = ffi.new("uint32_t[]", state)
    perm = ffi.new("int32_t[]", len(x))
    if lib.mg_shuffle(mt, perm, len(x)):
        raise ValueError("not a state of Python's random generator")
    rng.setstate((version, tuple(mt), gauss_next))
    if len(x) > 1:  # itemgetter of one index gives the item, not a tuple
        x[:] = operator.itemgetter(*memoryview(ffi.buffer(perm)).cast("i"))(x)  # the int32s read in place


def _same(rng, x):
    """Whether the C shuffle of x gives what random.shuffle does (both
    from rng's state, which this then leaves as the shuffle does)."""
    plain, fast = random.Random(), random.Random()
    plain.setstate(rng.getstate())
    fast.setstate(rng.getstate())
    expected = list(x)
    plain.shuffle(expected)
    _c_shuffle(fast, x)
    rng.setstate(plain.getstate())
    return x == expected and fast.getstate() == plain.getstate()


def shuffle(rng, x, verify=False):
    """Shuffle the list x in place as rng.shuffle(x) would."""
    if type(rng) is not random.Random or len(x) >= 2**31:  # a subclass may draw its own way
        return rng.shuffle(x)
    if verify:
        if not _same(rng, x):
            raise AssertionError("the C shuffle differs from random.shuffle")
    elif _agrees():
        _c_shuffle(rng, x)
    else:
        rng.shuffle(x)


@functools.cache
def _agrees():
    """Whether the C shuffle agrees with this Python's random.shuffle."""
    return _same(random.Random(0), list(range(100)))
