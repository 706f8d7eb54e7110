"""microgpt_c: microgpt's scalar-autograd GPT with its engine in C."""
from pkgutil import extend_path

# Run from a source checkout, this folder shadows the installed package that
# holds the compiled engine (_engine): let submodules come from there too.
__path__ = extend_path(__path__, __name__)

from .model import Config, Run, Tokenizer, load_docs, make_engine  # noqa: E402

__all__ = ["Config", "Run", "Tokenizer", "load_docs", "make_engine"]
