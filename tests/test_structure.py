"""The package's shape: no import cycles (lazy imports included), no file
of csrc calling into one that calls back, and every registered engine
implements the whole engine interface."""
import ast
import glob
import os
import re

import pytest

from microgpt_c.cli import COMMANDS
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
            # the dynamic imports: __main__'s of the commands, the others' of the registry's engines
            found |= ({module for module, _, _ in COMMANDS.values()} if path.endswith("__main__.py")
                      else {info.module for info in ENGINES.values()})
    return {m.split(".")[0] for m in found} - {"_engine"}


def acyclic(graph):
    """Fails naming a cycle of graph (node -> the nodes it uses), if any."""
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


def test_no_import_cycles():
    graph = {name[:-3]: imports(os.path.join(PACKAGE, name)) for name in os.listdir(PACKAGE) if name.endswith(".py")}
    assert "engine" in graph and "cengine" in graph["registry"] and "valuebench" in graph["__main__"]
    acyclic(graph)


def test_no_call_cycles_between_c_files():
    """Which .c file calls a function another defines (non-static,
    exported through a header): no two call each other, directly or round
    about."""
    csrc = os.path.join(os.path.dirname(PACKAGE), "csrc")
    text = {os.path.basename(f): open(f).read() for f in glob.glob(os.path.join(csrc, "*.c"))}
    headers = "".join(open(f).read() for f in glob.glob(os.path.join(csrc, "*.h")))
    exported = set(re.findall(r"\b(\w+)\([^;{()]*\);", headers))  # the prototypes
    defined = {f: {name for name in exported if re.search(rf"^(?:\w+[ *]+)+{name}\([^;]*?\)\s*{{", t, re.M)}
               for f, t in text.items()}
    graph = {f: {g for g in text if g != f and any(re.search(rf"\b{name}\(", t) for name in defined[g])}
             for f, t in text.items()}
    assert "core.c" in graph["api.c"] and "api.c" not in graph["value.c"]  # the scan sees calls
    acyclic(graph)


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


def test_no_function_is_over_50_lines():
    for name in os.listdir(PACKAGE):
        if name.endswith(".py"):
            for node in ast.walk(ast.parse(open(os.path.join(PACKAGE, name)).read())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    assert node.end_lineno - node.lineno + 1 <= 50, (name, node.name)
