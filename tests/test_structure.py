"""The package's shape: no import cycles (lazy imports included), and every
registered engine implements the whole engine interface."""
import ast
import os

import pytest

from microgpt_c.engine import Engine
from microgpt_c.registry import ENGINES, make_engine

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "microgpt_c")


def imports(path):
    """The package's modules that the module at path imports, anywhere in it."""
    found = set()
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            found |= {node.module} if node.module else {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("microgpt_c."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            found |= {info.module for info in ENGINES.values()}  # the registry's dynamic imports
    return {m.split(".")[0] for m in found} - {"_engine"}


def test_no_import_cycles():
    graph = {name[:-3]: imports(os.path.join(PACKAGE, name)) for name in os.listdir(PACKAGE) if name.endswith(".py")}
    assert "engine" in graph and "cengine" in graph["registry"]
    state = {}

    def visit(m, path):
        if state.get(m) == "open":
            pytest.fail("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
        if m not in state:
            state[m] = "open"
            for n in sorted(graph.get(m, ())):
                visit(n, path + [m])
            state[m] = "done"

    for m in sorted(graph):
        visit(m, [])


@pytest.mark.parametrize("name", list(ENGINES))
def test_every_engine_implements_the_interface(name):
    if not ENGINES[name].available():
        with pytest.raises(ValueError, match=f"needs {ENGINES[name].needs}"):
            make_engine(name)
        return
    for mode in ENGINES[name].modes:
        E = make_engine(name, mode)
        assert isinstance(E, Engine) and E.name == name and E.mode == mode
        assert not getattr(type(E), "__abstractmethods__", None)
    with pytest.raises(ValueError, match="mode"):
        make_engine(name, "no-such-mode")
