"""microgpt_c: microgpt's scalar-autograd GPT with its engine in C."""
import importlib.util
import os
import sys

# Run from a source checkout, this folder shadows the installed package that
# holds the compiled engine (_engine): let submodules come from there too (as
# pkgutil.extend_path does, without its import cost).
__path__ += [d for d in (os.path.join(p or ".", __name__) for p in sys.path)
             if os.path.isdir(d) and os.path.realpath(d) not in map(os.path.realpath, __path__)]

# Run from a checkout with a Python that has no install of the package, the
# compiled engine is missing: say what to do, not a traceback from deep inside.
if importlib.util.find_spec(__name__ + "._engine") is None:
    from .cli import PROG

    _why = ("the compiled engine (microgpt_c._engine) is not installed for this Python: "
            "run `pip install .` in the checkout, or activate the venv it is installed in")
    if sys.argv[:1] == ["-m"]:  # python -m microgpt_c: argv[0] is "-m" while the package is imported to find it
        sys.stderr.write(f"{PROG}: error: {_why}\n")
        raise SystemExit(2)
    raise ImportError(_why)

from .config import Config, Schedule  # noqa: E402
from .registry import make_engine  # noqa: E402
from .run import Run  # noqa: E402
from .text import Tokenizer, load_docs  # noqa: E402

__all__ = ["Config", "Run", "Schedule", "Tokenizer", "Value", "default_store", "draw_dot", "load_docs",
           "make_engine"]


def __getattr__(name):  # Value loads the compiled engine, draw_dot graphviz: only when asked for
    if name in ("Value", "default_store"):
        from . import value
        return getattr(value, name)
    if name == "draw_dot":
        from .graph import draw_dot
        return draw_dot
    raise AttributeError(f"module 'microgpt_c' has no attribute {name!r}")
