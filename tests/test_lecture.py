"""micrograd's lecture code as it is, on both engines: its Value cells (the
constructor with label, _children and _op; a settable label), the manual
walk of _backward node by node, the topological sort, backward(), the
neuron and the MLP it trains, and draw_dot (its nodes and edges always; the
picture where the graphviz package and Graphviz's dot program are, one line
saying what to install where not). And the README's snippet prints what its
comments say."""
import contextlib
import importlib.util
import io
import os
import re
import shutil

import pytest

from conftest import bits
from microgpt_c.graph import draw_dot, trace
from microgpt_c.pyengine import Value as PyValue
from microgpt_c.value import Value as CValue

HERE = os.path.dirname(os.path.abspath(__file__))

# The lecture's cells that use Value, in its order (the PyTorch cells left
# out); seen[...] keeps what the test compares.
LECTURE = """
a = Value(2.0, label='a')
b = Value(-3.0, label='b')
c = Value(10.0, label='c')
e = a*b; e.label = 'e'
d = e + c; d.label = 'd'
f = Value(-2.0, label='f')
L = d * f; L.label = 'L'
seen['L'] = repr(L)
seen['d._prev, d._op'] = ({v.label for v in d._prev}, d._op)
draw_dot(L).render(os.path.join(OUT, 'L'))

# the gradients by hand, then a step along them
L.grad = 1.0; f.grad = 4.0; d.grad = -2.0; c.grad = -2.0; e.grad = -2.0; a.grad = -2.0 * -3.0; b.grad = -2.0 * 2.0
a.data += 0.01 * a.grad; b.data += 0.01 * b.grad; c.data += 0.01 * c.grad; f.data += 0.01 * f.grad
e = a * b; d = e + c; L = d * f
seen['L after the step'] = L.data

# a neuron
x1 = Value(2.0, label='x1'); x2 = Value(0.0, label='x2')
w1 = Value(-3.0, label='w1'); w2 = Value(1.0, label='w2')
b = Value(6.8813735870195432, label='b')
x1w1 = x1*w1; x1w1.label = 'x1*w1'
x2w2 = x2*w2; x2w2.label = 'x2*w2'
x1w1x2w2 = x1w1 + x2w2; x1w1x2w2.label = 'x1*w1 + x2*w2'
n = x1w1x2w2 + b; n.label = 'n'
o = n.tanh(); o.label = 'o'
draw_dot(o).render(os.path.join(OUT, 'o'))
leaves = [x1, x2, w1, w2, b]

# _backward, node by node
o.grad = 1.0
o._backward()
n._backward()
b._backward()
x1w1x2w2._backward()
x2w2._backward()
x1w1._backward()
seen['manual walk'] = [v.grad for v in leaves + [n, o]]

# the same in topological order
topo = []
visited = set()
def build_topo(v):
  if v not in visited:
    visited.add(v)
    for child in v._prev:
      build_topo(child)
    topo.append(v)
build_topo(o)
for v in topo: v.grad = 0.0
o.grad = 1.0
for node in reversed(topo):
  node._backward()
seen['topological walk'] = [v.grad for v in leaves + [n, o]]

for v in topo: v.grad = 0.0
o.backward()
seen['backward()'] = [v.grad for v in leaves + [n, o]]

# a node used twice: its gradients add up
a = Value(3.0, label='a')
b = a + a; b.label = 'b'
b.backward()
seen['a + a'] = a.grad
a = Value(-2.0, label='a'); b = Value(3.0, label='b')
d = a * b; d.label = 'd'
e = a + b; e.label = 'e'
f = d * e; f.label = 'f'
f.backward()
seen['(a*b)*(a+b)'] = [a.grad, b.grad]

# numbers with Values, exp, division, subtraction
a = Value(2.0); b = Value(4.0)
seen['ops'] = [(a + 1).data, (2 * a).data, a.exp().data, (a / b).data, (a - b).data]

# tanh from exp: the same gradients
x1 = Value(2.0, label='x1'); x2 = Value(0.0, label='x2')
w1 = Value(-3.0, label='w1'); w2 = Value(1.0, label='w2')
b = Value(6.8813735870195432, label='b')
n = x1*w1 + x2*w2 + b
e = (2*n).exp()
o = (e - 1) / (e + 1)
o.backward()
seen['tanh from exp'] = [o.data, x1.grad, w1.grad, x2.grad, w2.grad]
draw_dot(o).render(os.path.join(OUT, 'o2'))

# the neural net library
class Neuron:
  def __init__(self, nin):
    self.w = [Value(random.uniform(-1,1)) for _ in range(nin)]
    self.b = Value(random.uniform(-1,1))
  def __call__(self, x):
    act = sum((wi*xi for wi, xi in zip(self.w, x)), self.b)
    out = act.tanh()
    return out
  def parameters(self):
    return self.w + [self.b]

class Layer:
  def __init__(self, nin, nout):
    self.neurons = [Neuron(nin) for _ in range(nout)]
  def __call__(self, x):
    outs = [n(x) for n in self.neurons]
    return outs[0] if len(outs) == 1 else outs
  def parameters(self):
    return [p for neuron in self.neurons for p in neuron.parameters()]

class MLP:
  def __init__(self, nin, nouts):
    sz = [nin] + nouts
    self.layers = [Layer(sz[i], sz[i+1]) for i in range(len(nouts))]
  def __call__(self, x):
    for layer in self.layers:
      x = layer(x)
    return x
  def parameters(self):
    return [p for layer in self.layers for p in layer.parameters()]

random.seed(1)
x = [2.0, 3.0, -1.0]
n = MLP(3, [4, 4, 1])
n(x)
draw_dot(n(x)).render(os.path.join(OUT, 'mlp'))
seen['parameters'] = len(n.parameters())
xs = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]]
ys = [1.0, -1.0, -1.0, 1.0]
losses = []
for k in range(20):
  ypred = [n(x) for x in xs]
  loss = sum((yout - ygt)**2 for ygt, yout in zip(ys, ypred))
  for p in n.parameters():
    p.grad = 0.0
  loss.backward()
  for p in n.parameters():
    p.data += -0.05 * p.grad
  losses.append(loss.data)
seen['losses'] = losses
seen['ypred'] = [repr(y) for y in ypred]
"""


def lecture(V, out):
    """The lecture's cells on the Value class V: what they keep, and stderr."""
    import random

    names, err = {"Value": V, "draw_dot": draw_dot, "os": os, "random": random, "OUT": str(out), "seen": {}}, \
        io.StringIO()
    with contextlib.redirect_stderr(err):
        exec(LECTURE, names)
    return names["seen"], err.getvalue()


PICTURES = ["L", "o", "o2", "mlp"]


@pytest.mark.parametrize("V", [CValue, PyValue])
def test_the_lecture_runs_to_its_end(V, tmp_path):
    seen, err = lecture(V, tmp_path)
    assert seen["L"] == "Value(data=-8.0, grad=0.0)"
    assert seen["d._prev, d._op"] == ({"e", "c"}, "+")
    assert seen["L after the step"] == pytest.approx(-7.286496)
    # x1, x2, w1, w2, b, n, o: micrograd's numbers
    want = [-1.5, 0.5, 1.0, 0.0, 0.5, 0.5, 1.0]
    assert seen["manual walk"] == pytest.approx(want, abs=1e-9)
    assert bits(seen["manual walk"]) == bits(seen["topological walk"]) == bits(seen["backward()"])
    assert seen["a + a"] == 2.0 and seen["(a*b)*(a+b)"] == [-3.0, -8.0]
    assert seen["ops"] == pytest.approx([3.0, 4.0, 7.389056, 0.5, -2.0])
    assert seen["tanh from exp"] == pytest.approx([0.7071068, -1.5, 1.0, 0.5, 0.0], abs=1e-6)
    assert seen["parameters"] == 41
    assert seen["losses"][-1] < seen["losses"][0] / 10  # it learns
    if importlib.util.find_spec("graphviz") and shutil.which("dot"):  # the pictures
        assert err == ""
        assert all(b"<svg" in (tmp_path / f"{name}.svg").read_bytes() for name in PICTURES)
    else:  # one line for each picture saying what to install
        assert err.splitlines() == [err.splitlines()[0]] * len(PICTURES)
        assert re.match(r"draw_dot: no picture: it needs .*graphviz", err)


def test_both_engines_give_the_same_bits_and_reprs(tmp_path):
    c, _ = lecture(CValue, tmp_path)
    p, _ = lecture(PyValue, tmp_path)
    for key in c:
        assert (bits(c[key]) if key in ("manual walk", "losses", "tanh from exp") else c[key]) == \
            (bits(p[key]) if key in ("manual walk", "losses", "tanh from exp") else p[key]), key
    assert repr(CValue(2)) == repr(PyValue(2)) == "Value(data=2.0, grad=0.0)"


@pytest.mark.parametrize("V", [CValue, PyValue])
def test_backward_one_level_passes_grad_to_the_children_only(V):
    a, b = V(2.0), V(-3.0)
    c = a * b
    d = c + 1.0
    d.grad = 2.0
    d._backward()
    assert (c.grad, a.grad, b.grad) == (2.0, 0, 0)  # one level: c, not c's children
    c._backward()
    assert (a.grad, b.grad) == (-6.0, 4.0)
    c._backward()  # it adds, as micrograd's does
    assert (a.grad, b.grad) == (-12.0, 8.0)
    a._backward()  # a leaf has nothing to pass on
    assert (a.grad, b.grad) == (-12.0, 8.0)


def test_backward_one_level_refuses_a_stale_value():
    from microgpt_c import make_engine

    store = make_engine("c")
    a = CValue(1.5, store) * 2
    store.reset()
    with pytest.raises(ValueError, match="stale"):
        a._backward()


@pytest.mark.parametrize("V", [CValue, PyValue])
def test_micrograds_constructor_makes_the_node_it_names(V):
    a, b = V(2.0), V(3.0)
    m = V(5.0, (a, b), "+", label="m")
    assert (m.data, m._prev, m._op, m.label) == (5.0, {a, b}, "+", "m")
    m.backward()  # no local gradients were given: nothing passes to a and b
    assert (a.grad, b.grad) == (0, 0)


def test_draw_dot_graph_is_micrograds():
    a, b, c, f = CValue(2.0, label="a"), CValue(-3.0, label="b"), CValue(10.0, label="c"), CValue(-2.0, label="f")
    e = a * b
    d = e + c
    L = d * f
    e.label, d.label, L.label = "e", "d", "L"
    L.backward()
    nodes, edges = trace(L)
    assert {v.label for v in nodes} == set("abcdefL")
    assert {(x.label, y.label) for x, y in edges} == {("a", "e"), ("b", "e"), ("e", "d"), ("c", "d"),
                                                     ("d", "L"), ("f", "L")}
    graphviz = pytest.importorskip("graphviz")  # the optional extra
    dot = draw_dot(L)
    assert isinstance(dot, graphviz.Digraph)
    source = dot.source
    assert source.count("shape=record") == 7 and source.count("->") == 6 + 3  # operand to op, op to result
    assert "{ L | data -8.0000 | grad 1.0000 }" in source


def test_draw_dot_without_the_dot_program_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    pytest.importorskip("graphviz")
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    assert draw_dot(PyValue(1.0)).render(str(tmp_path / "g")) is None
    assert draw_dot(PyValue(1.0)).pipe() is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "dot program" in err[0] and "graphviz" in err[0]
    assert not (tmp_path / "g.svg").exists()


def test_draw_dot_without_the_graphviz_package_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "graphviz", None)
    dot = draw_dot(PyValue(1.0))
    assert dot.render(str(tmp_path / "g")) is None and dot.view() is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "pip install '.[graph]'" in err[0] and "'microgpt_c[graph]'" in err[0]
    assert "system package graphviz" in err[0]
    assert "pip install '.[graph]'" in repr(dot)


def readme_snippet():
    text = open(os.path.join(HERE, "..", "README.md")).read()
    return next(block for block in re.findall(r"```python\n(.*?)```", text, re.S) if "draw_dot" in block)


def test_the_readme_snippet_prints_what_its_comments_say(tmp_path, monkeypatch):
    """Each print line's output is the number in its comment; the picture is
    written where it can be, else one line says what to install."""
    snippet = readme_snippet()
    monkeypatch.chdir(tmp_path)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        exec(snippet, {})
    comments = [line.split("#", 1)[1].strip() for line in snippet.splitlines() if line.startswith("print(")]
    assert out.getvalue().splitlines() == comments and comments
    picture = re.search(r"render\('(\w+)', format='(\w+)'", snippet)
    written = (tmp_path / f"{picture[1]}.{picture[2]}").exists()
    lines = err.getvalue().splitlines()
    assert (written and not lines) or (not written and len(lines) == 1 and "install" in lines[0])


def test_draw_dot_escapes_what_a_record_reads_as_its_own(monkeypatch):
    """A label with '|', braces, '<p>' (a port) or a backslash shows as
    itself: escaped in the record, so the record keeps its three fields.
    (A stand-in for graphviz records what draw_dot gives it.)"""
    import sys
    import types

    class Digraph:
        def __init__(self, **kwargs):
            self.labels = []

        def node(self, name, label, **kwargs):
            self.labels.append(label)

        def edge(self, *args):
            pass

        render = pipe = edge

    graphviz = types.ModuleType("graphviz")
    graphviz.Digraph, graphviz.ExecutableNotFound = Digraph, RuntimeError
    monkeypatch.setitem(sys.modules, "graphviz", graphviz)
    from microgpt_c import draw_dot
    v = CValue(1.0, label=r"a|{b}<p>\c")
    assert draw_dot(v).labels == [r"{ a\|\{b\}\<p\>\\c | data 1.0000 | grad 0.0000 }"]
