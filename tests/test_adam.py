"""The fused C Adam step (mg_adam) against the reference's Python Adam, and its
cheap powers against the C library's pow, on inputs built to sit next to
rounding midpoints, where x*x and sqrt(x) can differ from pow."""
import numpy as np
import pytest
from conftest import bits

from microgpt_c._engine import lib
from microgpt_c.cengine import CEngine
from microgpt_c.model import Adam
from microgpt_c.pyengine import PyEngine

CHEAP = bool(lib.mg_adam_cheap())
U = np.uint64


def reference_adam(p, g, m, v, lr_t, b1, b2, step):
    """The reference's loop over Python floats (** is the C library's pow)."""
    for i, gi in enumerate(g):
        m[i] = b1 * m[i] + (1 - b1) * gi
        v[i] = b2 * v[i] + (1 - b2) * gi**2
        m_hat = m[i] / (1 - b1 ** (step + 1))
        v_hat = v[i] / (1 - b2 ** (step + 1))
        p[i] -= lr_t * m_hat / (v_hat**0.5 + 1e-8)


def c_adam(E, p, g, m, v, lr_t, b1, b2, step, verify=True):
    E.verify = verify
    return E.adam(p, g, m, v, lr_t, b1, b2, 1 - b1 ** (step + 1), 1 - b2 ** (step + 1), 1e-8)


def sqrt_mod(c, L):
    """x with x*x = c (mod 2^L), c = 1 (mod 8), by lifting one bit at a time."""
    x = np.ones_like(c)
    for k in range(3, L):
        x += (((x * x - c) >> U(k)) & U(1)) << U(k - 1)
    return x


def scaled(rng, X, shift, n, lo, hi):
    """X (integers below 2^53) times 2^(shift + 2e), e random in [lo, hi)."""
    return np.ldexp(X.astype(np.float64), shift + 2 * rng.integers(lo, hi, n))


def offsets(rng, n, L, near):
    """j = 1 (mod 8), the distance from the midpoint in units of 2^-L ULP:
    under 2^20 if near, else up to about 0.05-0.08 ULP either way (across
    adam.c's margins, 0.02 ULP for common magnitudes, 0.05 for the rest)."""
    top = 2**17 if near else 2 ** (L - 4) // 6
    return rng.integers(-top, top, n) * 8 + 1


def near_square_midpoints(rng, n, near=True):
    """x with x*x within |j| 2^-L ULP of a rounding midpoint: x = X 2^e, X a
    53-bit integer, whose square's L dropped bits are 2^(L-1) + j."""
    L = 53  # X in [1.5, 2) 2^52: X^2 in [2^105, 2^106), 53 bits dropped
    j = offsets(rng, n, L, near)
    x = sqrt_mod((U(2 ** (L - 1)) + j.astype(U)) & U(2**L - 1), L)
    X = U(2**L) - np.minimum(x, U(2 ** (L - 1)) - x)  # x and 2^(L-1) - x are both roots
    sign = rng.choice([-1.0, 1.0], n)
    return sign * np.concatenate([scaled(rng, X[: n // 2], -52, n // 2, -25, 0),  # gradients
                                  scaled(rng, X[n // 2:], -52, n - n // 2, -240, 240)])


def near_root_midpoints(rng, n, near=True):
    """x with sqrt(x) near a midpoint A/2 (A odd, 54 bits): x = (A^2 - j) 2^(2e-2)
    where A^2 = j (mod 2^55), A in [2^53.5, 2^54), so x is a double."""
    L = 55
    j = offsets(rng, 2 * n, L, near)
    x = sqrt_mod(j.astype(U) & U(2**L - 1), L)
    A = np.maximum(x, U(2**54) - x)
    keep = A >= U(int(2**53.5) + 1)  # about 59%
    A, j = A[keep][:n], j[keep][:n]
    assert len(A) == n
    a1, a0 = A >> U(27), A & U(2**27 - 1)  # A^2 >> 55, without overflow
    mid = U(2) * a1 * a0
    low = a0 * a0 + ((mid & U(2**27 - 1)) << U(27))
    X = ((a1 * a1 + (mid >> U(27)) + (low >> U(54))) >> U(1)) + (j < 0).astype(U)
    return np.concatenate([scaled(rng, X[: n // 2], L - 2, n // 2, -80, -60),  # v_hat
                           scaled(rng, X[n // 2:], L - 2, n - n // 2, -520, 420)])


def random_doubles(rng, n):
    """Random bit patterns: every exponent, subnormals, inf and NaN included."""
    return rng.integers(0, 2**64, n, dtype=U, endpoint=False).view(np.float64)


def pow_verified(E, x, power):
    """Run x through one power in the verifying mode (raises on any difference from
    pow); returns how many took pow. The other power sees only zeros."""
    n = len(x)
    z = np.zeros(n)
    if power == 2:  # b2 = 1: v = 1*0 + 0*x**2 = 0, so v_hat ** 0.5 is of zeros
        g, v = x.copy(), z.copy()
    else:  # g = 0, b2 = bc2 = 1: v_hat = v = x
        g, v = z.copy(), x.copy()
    E.verify = True
    return E.adam(z.copy(), g, z.copy(), v, 0.01, 0.85, 1.0, 0.15, 1.0, 1e-8)


@pytest.mark.parametrize("power", [2, 0.5])
def test_cheap_power_is_pow(power):
    """About 10^6 random and 10^6 near-midpoint inputs per power: the cheap way
    never differs from pow (the verifying mode), and near midpoints it defers to pow."""
    E, rng = CEngine(), np.random.default_rng(7)
    construct = near_square_midpoints if power == 2 else near_root_midpoints
    patterns = random_doubles(rng, 400_000)
    typical = np.abs(rng.normal(0, 1, 600_000)) * 10.0 ** rng.uniform(-16, 0, 600_000)
    near, band = construct(rng, 1_000_000), construct(rng, 200_000, near=False)
    slow = [pow_verified(E, x, power) for x in (patterns, typical, near, band)]
    if CHEAP:
        assert slow[1] < 0.15 * len(typical)  # the common case is cheap
        assert slow[2] == len(near)  # none near a midpoint is admitted
        assert 0.2 * len(band) < slow[3] < 0.8 * len(band)  # both sides of the margins
    else:
        assert slow == [len(patterns), len(typical), len(near), len(band)]


@pytest.mark.skipif(not CHEAP, reason="needs glibc's pow, which is not correctly rounded")
def test_construction_finds_where_x_times_x_is_not_pow():
    """The near-midpoint inputs are where the shortcut alone would fail: the C
    library's pow (Python's **) differs from x*x or sqrt(x) on some of them."""
    rng = np.random.default_rng(3)
    x = near_square_midpoints(rng, 20_000)
    squares = np.array([xi**2 for xi in x.tolist()])
    assert np.count_nonzero(squares.view(U) != (x * x).view(U)) > 1000
    r = near_root_midpoints(rng, 20_000)
    roots = np.array([ri**0.5 for ri in r.tolist()])
    assert np.count_nonzero(roots.view(U) != np.sqrt(r).view(U)) > 1000


def special_values(rng, n):
    """Zeros of both signs, subnormals, tiny and huge (square still finite),
    and values whose squares sit next to midpoints."""
    pick = [np.zeros(n), -np.zeros(n), 5e-324 * rng.integers(1, 9, n),
            rng.normal(0, 1, n) * 1e-160, rng.normal(0, 1, n) * 1e150,
            rng.normal(0, 1e-3, n), near_square_midpoints(rng, n)]
    return np.stack(pick)[rng.integers(0, len(pick), n), np.arange(n)]


def test_adam_equals_reference_on_adversarial_inputs():
    """At step 0 with b2 = 0.5, v_hat = (0.5 v + 0.5 g**2) / 0.5 is the state v
    exactly where g**2 is 0 or below v's last bit (zeros, subnormals: about
    half of them), so v_hat ** 0.5 sees near-midpoint roots; g**2 sees zeros,
    subnormals, huge values and near-midpoint squares. Then more steps."""
    E, rng, n = CEngine(), np.random.default_rng(11), 6000
    p, m = rng.normal(0, 0.1, n), rng.normal(0, 1e-3, n)
    v = near_root_midpoints(rng, n)
    v[rng.random(n) < 0.1] = 0.0
    ref = [p.tolist(), m.tolist(), v.tolist()]
    b1, b2 = 0.85, 0.5
    for step in range(6):
        g = special_values(rng, n)
        reference_adam(ref[0], g.tolist(), ref[1], ref[2], 0.01, b1, b2, step)
        c_adam(E, p, g, m, v, 0.01, b1, b2, step)
        assert not g.any()  # consumed
        for c, r in zip((p, m, v), ref):
            assert bits(c) == bits(r)


def test_adam_equals_reference_over_many_steps():
    """Realistic gradients (sparse, varied scales) over 60 steps against the
    Python loop, then 400 steps against the numpy Adam with the exact pow."""
    E, rng, n = CEngine(), np.random.default_rng(5), 4192
    p = rng.normal(0, 0.08, n)
    m, v = np.zeros(n), np.zeros(n)
    ref = [p.tolist(), [0.0] * n, [0.0] * n]
    numpy_adam, q = Adam(n, 0.01, 460), p.copy()
    for step in range(460):
        scale = 10.0 ** rng.uniform(-6, 0, n)
        g = rng.normal(0, 1, n) * scale * (rng.random(n) < 0.6)
        lr_t = 0.01 * (1 - step / 460)
        if step < 60:
            reference_adam(ref[0], g.tolist(), ref[1], ref[2], lr_t, 0.85, 0.99, step)
        numpy_adam.update(q, g, step, PyEngine.pow)
        c_adam(E, p, g, m, v, lr_t, 0.85, 0.99, step, verify=step % 7 == 0)
        if step < 60:
            assert [bits(p), bits(m), bits(v)] == [bits(r) for r in ref]
        assert bits(p) == bits(q)
    assert [bits(m), bits(v)] == [bits(numpy_adam.m), bits(numpy_adam.v)]


def test_adam_bad_input():
    E, n = CEngine(), 8
    ok = [np.ones(n) for _ in range(4)]
    args = (0.01, 0.85, 0.99, 0.15, 0.01, 1e-8)
    bad_arrays = [
        [np.ones(n, np.float32)] + ok[1:],  # dtype
        [np.ones(2 * n)[::2]] + ok[1:],  # not contiguous
        [np.ones(n + 1)] + ok[1:],  # length
        [np.ones((2, 4))] + ok[1:],  # shape
        [ok[0].tolist()] + ok[1:],  # not an array
        [ok[0], ok[0], ok[2], ok[3]],  # the same array twice
    ]
    read_only = np.ones(n)
    read_only.flags.writeable = False
    bad_arrays.append([read_only] + ok[1:])
    overlap = np.ones(2 * n)
    bad_arrays.append([overlap[:n], overlap[n // 2: n // 2 + n]] + ok[2:])
    for arrays in bad_arrays:
        with pytest.raises(ValueError):
            E.adam(*arrays, *args)
    for i, bad in [(3, 0.0), (4, 0.0), (5, 0.0), (5, -1e-8), (5, float("nan"))]:  # bc1, bc2, eps
        a = list(args)
        a[i] = bad
        with pytest.raises(ValueError):
            E.adam(*ok, *a)
    assert all((x == 1).all() for x in ok + [overlap])  # nothing changed
    assert E.adam(*(np.zeros(0) for _ in range(4)), *args) == 0


def test_fast_mode_adam_is_numpys():
    """Fast mode's Adam is the numpy Adam with numpy's ** (x*x and sqrt(x)),
    but for the bias corrections folded into multipliers and FMA: every
    parameter and moment within 1e-12 relative (or 1e-15 absolute)."""
    E, rng, n = CEngine("fast"), np.random.default_rng(2), 4193  # one past a multiple of 4: the tail too
    p = rng.normal(0, 0.08, n)
    m, v, q, adam = np.zeros(n), np.zeros(n), p.copy(), Adam(n, 0.01, 50)
    for step in range(50):
        g = rng.normal(0, 1e-3, n) * (rng.random(n) < 0.6)
        adam.update(q, g, step, lambda x, e, out: np.power(x, e, out=out))
        c_adam(E, p, g, m, v, 0.01 * (1 - step / 50), 0.85, 0.99, step, verify=False)
        assert not g.any()  # consumed
        for c, r in ((p, q), (m, np.frombuffer(adam.m)), (v, np.frombuffer(adam.v))):
            assert np.allclose(c, r, rtol=1e-12, atol=1e-15)
    assert E.adam(p, g, m, v, 0.01, 0.85, 0.99, 0.15, 0.01, 1e-8) == 0  # pow never called
