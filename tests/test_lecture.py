"""micrograd's lecture code as it is, on both engines: its constructor
(label, _children, _op), a settable label, and draw_dot's graph (its nodes
and edges always; the graphviz Digraph where graphviz is installed; an SVG
where Graphviz's dot program is)."""
import shutil

import pytest

from microgpt_c.graph import trace
from microgpt_c.pyengine import Value as PyValue
from microgpt_c.value import Value as CValue

LECTURE = """
a = Value(2.0, label='a')
b = Value(-3.0, label='b')
c = Value(10.0, label='c')
e = a*b; e.label = 'e'
d = e + c; d.label = 'd'
f = Value(-2.0, label='f')
L = d * f; L.label = 'L'
L.backward()
"""


def lecture(V):
    names = {"Value": V}
    exec(LECTURE, names)
    return names


@pytest.mark.parametrize("V", [CValue, PyValue])
def test_the_lecture_runs_as_it_is(V):
    n = lecture(V)
    assert [(n[k].label, n[k].data, n[k].grad) for k in "abcdefL"] == [
        ("a", 2.0, 6.0), ("b", -3.0, -4.0), ("c", 10.0, -2.0), ("d", 4.0, -2.0), ("e", -6.0, -2.0),
        ("f", -2.0, 4.0), ("L", -8.0, 1.0)]
    assert V(1.0).label == "" and (n["a"] * 2).label == ""


@pytest.mark.parametrize("V", [CValue, PyValue])
def test_micrograds_constructor_makes_the_node_it_names(V):
    a, b = V(2.0), V(3.0)
    m = V(5.0, (a, b), "+", label="m")
    assert (m.data, m._prev, m._op, m.label) == (5.0, {a, b}, "+", "m")
    m.backward()  # no local gradients were given: nothing passes to a and b
    assert (a.grad, b.grad) == (0, 0)


def test_draw_dot_graph_is_micrograds():
    n = lecture(CValue)
    nodes, edges = trace(n["L"])
    assert {v.label for v in nodes} == set("abcdefL")
    assert {(x.label, y.label) for x, y in edges} == {("a", "e"), ("b", "e"), ("e", "d"), ("c", "d"),
                                                     ("d", "L"), ("f", "L")}
    graphviz = pytest.importorskip("graphviz")  # the optional extra
    from microgpt_c import draw_dot
    dot = draw_dot(n["L"])
    assert isinstance(dot, graphviz.Digraph)
    source = dot.source
    assert source.count("shape=record") == 7 and source.count("->") == 6 + 3  # operand to op, op to result
    assert "{ L | data -8.0000 | grad 1.0000 }" in source
    if shutil.which("dot"):
        assert b"<svg" in dot.pipe(format="svg")


def test_draw_dot_without_graphviz_says_how_to_get_it(monkeypatch):
    import sys
    from microgpt_c.graph import draw_dot
    monkeypatch.setitem(sys.modules, "graphviz", None)
    with pytest.raises(ImportError, match=r"pip install 'microgpt_c\[graph\]'"):
        draw_dot(PyValue(1.0))


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

    monkeypatch.setitem(sys.modules, "graphviz", types.SimpleNamespace(Digraph=Digraph))
    from microgpt_c import draw_dot
    v = CValue(1.0, label=r"a|{b}<p>\c")
    assert draw_dot(v).labels == [r"{ a\|\{b\}\<p\>\\c | data 1.0000 | grad 0.0000 }"]
