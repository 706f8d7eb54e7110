"""draw_dot: a Value's graph as Graphviz draws it in micrograd's lecture: one
record per Value (label, data, grad), a small node per op, edges from each
operand through its op to the result. graphviz is an optional extra (pip
install 'microgpt_c[graph]'); rendering also needs Graphviz's dot program."""

import re

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


def draw_dot(root, format="svg", rankdir="LR"):
    """A graphviz.Digraph of root's graph (in Jupyter it renders itself)."""
    try:
        from graphviz import Digraph
    except ImportError:
        raise ImportError("draw_dot needs the graphviz package: pip install 'microgpt_c[graph]' "
                          "(and Graphviz's dot program to render)") from None
    dot = Digraph(format=format, graph_attr={"rankdir": rankdir})
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
