"""microgpt_c: microgpt's scalar-autograd GPT with its engine in C."""
from pkgutil import extend_path

# Run from a source checkout, this folder shadows the installed package that
# holds the compiled engine (_engine): let submodules come from there too.
__path__ = extend_path(__path__, __name__)

from .config import Config, Schedule  # noqa: E402
from .registry import make_engine  # noqa: E402
from .run import Run  # noqa: E402
from .text import Tokenizer, load_docs  # noqa: E402

__all__ = ["Config", "Run", "Schedule", "Tokenizer", "Value", "default_store", "load_docs", "make_engine"]


def __getattr__(name):  # Value loads the compiled engine: only when asked for
    if name in ("Value", "default_store"):
        from . import value
        return getattr(value, name)
    raise AttributeError(f"module 'microgpt_c' has no attribute {name!r}")
