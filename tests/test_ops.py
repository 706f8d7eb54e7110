"""Every scalar op and vector op: C values and gradients bit-identical to the
pure-Python engine."""
import random

import numpy as np
import pytest

from conftest import bits, grads
from microgpt_c import make_engine
from microgpt_c.cengine import CEngine, lib
from microgpt_c.pyengine import Value


def c_scalar(op, xs, *consts):
    """Build op on leaves xs in a fresh C store; return (value, grads of xs)."""
    E = CEngine()
    ids = [E._ok(lib.mg_leaf(E.s, x)) for x in xs]
    out = E._ok(getattr(lib, "mg_" + op)(E.s, *ids, *consts))
    E.backward(out)
    return [E.value(out)] + [E.v.grad[i] for i in ids]


def py_scalar(op, xs, *consts):
    vs = [Value(x) for x in xs]
    f = {"add": lambda a, b: a + b, "mul": lambda a, b: a * b, "pow": lambda a, p: a**p,
         "log": Value.log, "exp": Value.exp, "relu": Value.relu}[op]
    out = f(*vs, *consts)
    out.backward()
    return [out.data] + [v.grad for v in vs]


def samples(n, lo=-3.0, hi=3.0, seed=0, extremes=(0.0, -0.0, 1.0, -1.0)):
    rng = random.Random(seed)
    return [rng.uniform(lo, hi) for _ in range(n)] + [x for x in extremes if lo <= x <= hi]


@pytest.mark.parametrize("op", ["add", "mul"])
def test_binary_ops(op):
    xs = samples(300, -1e300, 1e300) + samples(300, extremes=(1e-300, 1e300, 5e-324))
    for a, b in zip(xs, reversed(xs)):
        assert bits(c_scalar(op, [a, b])) == bits(py_scalar(op, [a, b])), (op, a, b)


def test_same_child_twice():
    for a in samples(100):
        E = CEngine()
        x = E._ok(lib.mg_leaf(E.s, a))
        out = E._ok(lib.mg_mul(E.s, x, x))
        E.backward(out)
        v = Value(a)
        w = v * v
        w.backward()
        assert bits([E.value(out), E.v.grad[x]]) == bits([w.data, v.grad])


@pytest.mark.parametrize("p", [-0.5, -1, -1.5, 2, 3, 0.5, 1.7])
def test_pow(p):
    for a in samples(200, 1e-3, 50.0, seed=1):
        if a > 0:
            assert bits(c_scalar("pow", [a], float(p))) == bits(py_scalar("pow", [a], p)), (a, p)


@pytest.mark.parametrize("op,lo,hi", [("log", 1e-6, 100.0), ("exp", -30.0, 30.0), ("relu", -2.0, 2.0)])
def test_unary(op, lo, hi):
    for a in samples(300, lo, hi, seed=2):
        if op != "log" or a > 0:
            assert bits(c_scalar(op, [a])) == bits(py_scalar(op, [a])), (op, a)


def both(build, n_inputs, seed):
    """Run build(E, inputs) on both engines with the same random inputs; return
    (values of the output, gradients of the inputs) per engine, backpropagating
    from the sum of the outputs' products with fixed random weights."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(0, 1, n_inputs).tolist()
    ws = rng.normal(0, 1, 64 * 64).tolist()
    res = []
    for E in (make_engine("python"), make_engine("c")):
        P = E.create_params({"x": (1, n_inputs), "w": (64, 64)}, xs + ws)
        out = build(E, P)
        vals = [E.value(out)] if isinstance(out, (int, Value)) else E.values(out)
        if not isinstance(out, (int, Value)):  # reduce a vector to a scalar loss: mean of nll
            out = E.run(lambda t: E.mean([E.nll(out, t[0])]), [0])
        E.backward(out)
        res.append((bits(vals), bits(grads(E))))
    return res


def vec(E, P, n):
    """The first n inputs as a vector in either engine."""
    x = P["x"]
    return x[0][:n] if E.name == "python" else (x[0], n)


def mat(E, P, rows, cols):
    """A rows x cols matrix of the weight inputs."""
    w = P["w"]
    if E.name == "python":
        flat = [v for row in w for v in row]
        return [flat[r * cols:(r + 1) * cols] for r in range(rows)]
    return (w[0], rows, cols)


VECTOR_OPS = {
    "rmsnorm": lambda E, P: E.rmsnorm(vec(E, P, 12)),
    "linear": lambda E, P: E.linear(vec(E, P, 12), mat(E, P, 7, 12)),
    "softmax": lambda E, P: E.softmax(vec(E, P, 9)),
    "relu": lambda E, P: E.relu(vec(E, P, 10)),
    "scale": lambda E, P: E.scale(vec(E, P, 5), 0.5**-1),
    "add": lambda E, P: E.add(vec(E, P, 6), E.relu(vec(E, P, 6))),
    "nll": lambda E, P: E.run(lambda t: E.nll(vec(E, P, 11), t[0]), [3]),
    "attention": lambda E, P: E.attention(
        E.linear(vec(E, P, 12), mat(E, P, 12, 12)),
        [E.rmsnorm(vec(E, P, 12)), E.relu(vec(E, P, 12))],
        [E.scale(vec(E, P, 12), 3.0), E.linear(vec(E, P, 12), mat(E, P, 12, 12))], 3),
}


@pytest.mark.parametrize("name", sorted(VECTOR_OPS))
def test_vector_ops_bit_identical(name):
    for seed in range(5):
        py, c = both(VECTOR_OPS[name], 12, seed)
        assert py == c, (name, seed)
