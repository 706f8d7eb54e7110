"""microgpt_c: microgpt's scalar-autograd GPT with its engine in C."""
from pkgutil import extend_path

# Run from a source checkout, this folder shadows the installed package that
# holds the compiled engine (_engine): let submodules come from there too.
__path__ = extend_path(__path__, __name__)

from .model import Config, Run, Tokenizer, load_docs, make_engine  # noqa: E402

__all__ = ["Config", "Run", "Tokenizer", "Value", "load_docs", "make_engine"]


def __getattr__(name):  # Value loads the compiled engine: only when asked for
    if name == "Value":
        from .value import Value
        return Value
    raise AttributeError(f"module 'microgpt_c' has no attribute {name!r}")
