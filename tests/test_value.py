"""The micrograd-style Value API on both engines: random expression graphs
with shared subexpressions give bit-identical values and gradients, which
agree with finite differences; stale and foreign Values are errors."""
import math

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from conftest import bits
from microgpt_c import Value as CValue
from microgpt_c import make_engine
from microgpt_c.pyengine import Value as PyValue

UNARY = ["neg", "exp", "log", "relu", "tanh", "pow"]
BINARY = ["add", "sub", "mul", "div"]
WITH_NUMBER = ["add", "sub", "mul", "div", "radd", "rsub", "rmul", "rdiv"]
EXPONENTS = [2, 3, -1, 0.5, -0.5, 1.5, -2]


def apply(op, a, b, c, p):
    return {
        "neg": lambda: -a, "exp": a.exp, "log": a.log, "relu": a.relu, "tanh": a.tanh, "pow": lambda: a**p,
        "add": lambda: a + b, "sub": lambda: a - b, "mul": lambda: a * b, "div": lambda: a / b,
        "nadd": lambda: a + c, "nsub": lambda: a - c, "nmul": lambda: a * c, "ndiv": lambda: a / c,
        "radd": lambda: c + a, "rsub": lambda: c - a, "rmul": lambda: c * a, "rdiv": lambda: c / a,
    }[op]()


finite = st.floats(-3, 3, allow_nan=False, allow_infinity=False)


def graphs_of(numbers):
    """(leaves, steps): each step an op, two earlier nodes by index (so nodes
    are shared), a nonzero constant and an exponent."""
    step = st.tuples(st.sampled_from(UNARY + BINARY + ["n" + o for o in BINARY] + WITH_NUMBER[4:]),
                     st.integers(0, 10**6), st.integers(0, 10**6), numbers.filter(lambda c: c != 0),
                     st.sampled_from(EXPONENTS))
    return st.tuples(st.lists(numbers, min_size=1, max_size=4), st.lists(step, min_size=1, max_size=30))


graphs = graphs_of(finite)
# finite differences need a well-conditioned function, with no number near 0
# or huge: x / x at x = 1e-120 has gradient 1/x - 1/x, and rounding leaves
# 1e103; x / 1e-231 makes the local gradient of ** -1 underflow to 0
moderate_graphs = graphs_of(finite.filter(lambda x: abs(x) > 1e-3))


def build(V, leaves, steps):
    """Each step applies an op to earlier nodes (so nodes are shared); the last
    node is the output. Returns the leaves and all nodes."""
    nodes = [V(x) for x in leaves]
    for op, i, j, c, p in steps:
        nodes.append(apply(op, nodes[i % len(nodes)], nodes[j % len(nodes)], c, p))
    return nodes[:len(leaves)], nodes


NEGATED = {"neg": 0, "sub": 1, "rsub": 0}  # the operand an op multiplies by the integer -1


def comparable(leaves, steps):
    """The steps without the one construct the engines differ on: the
    reference's relu gives the integer 0, and negation multiplies by the
    integer -1, so -relu(x) for x <= 0 is the integer 0 in Python, where the
    C engine, all floats, gives -0.0 (README.md, "The Value API")."""
    nodes, kept = [PyValue(x) for x in leaves], []
    for op, i, j, c, p in steps:
        a, b = nodes[i % len(nodes)], nodes[j % len(nodes)]
        if op in NEGATED and isinstance((a, b)[NEGATED[op]].data, int):
            continue
        try:
            nodes.append(apply(op, a, b, c, p))
        except (ArithmeticError, ValueError, TypeError):
            return kept + [(op, i, j, c, p)]  # the first failing step ends the graph
        kept.append((op, i, j, c, p))
    return kept


def python_result(leaves, steps, well_conditioned=False):
    """The pure-Python engine's output value and leaf gradients, or None when
    it raises or makes a number that is not a finite float somewhere (a value
    or a local gradient): the cases where the C engine must raise."""
    try:
        lv, nodes = build(PyValue, leaves, steps)
    except (ArithmeticError, ValueError, TypeError):  # TypeError: a complex number met math.log, say
        return None
    numbers = [n.data for n in nodes] + [g for n in nodes for g in n._local_grads]
    if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in numbers):
        return None
    nodes[-1].backward()
    if well_conditioned and not all(x == 0 or 1e-6 < abs(x) < 1e6 for x in numbers):
        return None
    return [nodes[-1].data] + [v.grad for v in lv]


def as_python(store, leaves, steps):
    """Asserts that the C Values of store give the pure-Python Value's output
    and gradients, bit for bit, or that both raise; returns the C leaves
    (None if it raised)."""
    steps = comparable(leaves, steps)
    want = python_result(leaves, steps)
    if want is None:
        with pytest.raises(ArithmeticError):
            build(lambda x: CValue(x, store), leaves, steps)
        return None
    lv, nodes = build(lambda x: CValue(x, store), leaves, steps)
    nodes[-1].backward()
    assert bits([nodes[-1].data] + [v.grad for v in lv]) == bits(want), (leaves, steps)
    return lv


@settings(max_examples=300, deadline=None)
@given(graphs)
def test_random_graphs_bit_identical(graph):
    as_python(make_engine("c"), *graph)


def nonzero_gradients_checked(leaves, steps):
    """Central differences of the C engine's output against the pure-Python
    engine's gradient of each leaf, where the function is smooth around it.
    Returns how many nonzero gradients agreed (None: not well conditioned)."""
    want = python_result(leaves, steps, well_conditioned=True)  # (the sign of a zero does not matter here)
    if want is None or not all(abs(x) < 1e6 for x in want):
        return None

    def f(xs):
        store = make_engine("c")
        return build(lambda x: CValue(x, store), xs, steps)[1][-1].data

    out, grads, checked = want[0], want[1:], 0
    for k, x in enumerate(leaves):
        h = 1e-6 * max(1.0, abs(x))
        try:
            up, down = (f(leaves[:k] + [x + d] + leaves[k + 1:]) for d in (h, -h))
        except ArithmeticError:
            continue  # the perturbed point leaves the domain (log of 0, say)
        ahead, behind = (up - out) / h, (out - down) / h
        if abs(ahead - behind) > 1e-3 * max(1.0, abs(ahead)):
            continue  # not smooth here (a relu kink): no derivative to check
        fd = (up - down) / (2 * h)
        assert abs(fd - grads[k]) <= 1e-5 * max(1.0, abs(grads[k])), (k, fd, grads[k])
        checked += grads[k] != 0
    return checked


def test_random_graphs_finite_differences():
    """Most random graphs check a nonzero gradient against finite differences:
    a run that skipped every leaf (kinks, domain edges) or met only zero
    gradients (a relu that is off) would pass having compared nothing."""
    checked = []

    @settings(max_examples=150, deadline=None)
    @given(moderate_graphs)
    def each(graph):
        n = nonzero_gradients_checked(*graph)
        assume(n is not None)
        checked.append(n)

    each()
    assert sum(n > 0 for n in checked) >= 75, f"only {sum(n > 0 for n in checked)} of {len(checked)} graphs"


def test_the_micrograd_example_on_both_engines():
    results = []
    for V in (CValue, PyValue):
        a, b = V(2.0), V(-3.0)
        c = (a * b + a**2).relu()
        d = (a - 1) / b + 2 / a - (-b).tanh() + (a * 0.5).exp().log() - 1.5 * a
        c.backward()
        d.backward()
        results.append(bits([c.data, d.data, a.grad, b.grad]))
    assert results[0] == results[1]


def test_stale_values_are_errors():
    store = make_engine("c")
    a = CValue(1.5, store)
    b = a * 2
    store.reset()
    c = CValue(7.0, store)  # takes a's old id
    assert c.id == a.id
    for use in (lambda: a.data, lambda: b.grad, lambda: a + 1, lambda: c * b, lambda: b.backward()):
        with pytest.raises(ValueError, match="stale"):
            use()
    assert c.data == 7.0


def test_values_of_different_stores_do_not_mix():
    with pytest.raises(ValueError, match="different stores"):
        CValue(1.0, make_engine("c")) + CValue(2.0, make_engine("c"))
    with pytest.raises(TypeError):
        CValue(1.0) + "2"


@pytest.mark.parametrize("make", [
    lambda: CValue(0.0).log(), lambda: CValue(-1.0).log(), lambda: CValue(-2.0) ** 0.5,
    lambda: CValue(0.0) ** -1, lambda: CValue(1e300) * 1e300, lambda: CValue(800.0).exp(),
    lambda: CValue(float("nan")), lambda: CValue(float("inf")), lambda: CValue(1.0) / 0.0,
])
def test_math_errors_raise(make):
    with pytest.raises(ArithmeticError):
        make()


def test_python_engine_where_c_differs():
    """For the record: the pure-Python engine keeps the reference's behaviour,
    integers included."""
    assert isinstance((PyValue(-2.0) ** 0.5).data, complex)
    assert math.isinf((PyValue(1e300) * 1e300).data)
    with pytest.raises(ValueError):
        PyValue(0.0).log()
    assert bits([(-PyValue(-1.0).relu()).data, (-CValue(-1.0).relu()).data]) == bits([0.0, -0.0])
