"""draw_dot: a Value's graph as Graphviz draws it in micrograd's lecture: one
record per Value (label, data, grad), a small node per op, edges from each
operand through its op to the result. Drawing needs the graphviz Python
package (an optional extra) and Graphviz's dot program (a system package);
without either, rendering says in one line on stderr what to install, rather
than raise: the lecture's code runs to its end either way."""
import functools
import re
import sys

PACKAGE = ("the graphviz Python package (pip install '.[graph]' from a checkout, or pip install "
           "'microgpt_c[graph]') and Graphviz's dot program (the system package graphviz)")
DOT = "Graphviz's dot program, which is not on PATH (the system package graphviz: apt-get install graphviz, " \
      "brew install graphviz, ...)"


def missing(what):
    """The one line saying what to install, instead of a picture (None)."""
    sys.stderr.write(f"draw_dot: no picture: it needs {what}\n")

# Characters a Graphviz record label reads as its own syntax (fields, their
# ports, line ends), escaped with a backslash to stand for themselves.
RECORD_SYNTAX = re.compile(r'([\\{}|<>"])')


def record_text(text):
    return RECORD_SYNTAX.sub(r"\\\1", text)


def trace(root):
    """The Values below root (root included) and the (child, parent) edges
    between them, by micrograd's _prev."""
    nodes, edges, stack = set(), set(), [root]
    while stack:
        v = stack.pop()
        if v in nodes:
            continue
        nodes.add(v)
        for child in v._prev:
            edges.add((child, v))
            stack.append(child)
    return nodes, edges


class Unavailable:
    """What draw_dot gives without the graphviz package: rendering it, or
    showing it, says what to install."""

    def render(self, *args, **kwargs):
        return missing(PACKAGE)

    pipe = view = render

    def __repr__(self):
        return f"<no picture: draw_dot needs {PACKAGE}>"


@functools.lru_cache(maxsize=None)
def graph_class(graphviz):
    """graphviz.Digraph whose render and pipe (view and Jupyter's display go
    through them), without the dot program, say what to install."""

    def without_traceback(method):
        @functools.wraps(method)
        def call(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except graphviz.ExecutableNotFound:
                return missing(DOT)
        return call

    return type("Digraph", (graphviz.Digraph,), {"render": without_traceback(graphviz.Digraph.render),
                                                 "pipe": without_traceback(graphviz.Digraph.pipe)})


def draw_dot(root, format="svg", rankdir="LR"):
    """root's graph, a graphviz Digraph: .render(name) writes name.svg (in
    Jupyter it shows itself)."""
    try:
        import graphviz
    except ImportError:
        return Unavailable()
    dot = graph_class(graphviz)(format=format, graph_attr={"rankdir": rankdir})
    nodes, edges = trace(root)
    for v in nodes:
        uid = str(id(v))
        dot.node(uid, label=f"{{ {record_text(v.label)} | data {v.data:.4f} | grad {v.grad:.4f} }}", shape="record")
        if v._op:
            dot.node(uid + v._op, label=v._op)
            dot.edge(uid + v._op, uid)
    for child, parent in edges:
        dot.edge(str(id(child)), str(id(parent)) + parent._op)
    return dot
