"""microgpt_c: microgpt's scalar-autograd GPT with its engine in C."""
import os
import sys

# Run from a source checkout, this folder shadows the installed package that
# holds the compiled engine (_engine): let submodules come from there too (as
# pkgutil.extend_path does, without its import cost).
__path__ += [d for d in (os.path.join(p or ".", __name__) for p in sys.path)
             if os.path.isdir(d) and os.path.realpath(d) not in map(os.path.realpath, __path__)]

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
