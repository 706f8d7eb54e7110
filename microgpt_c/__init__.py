"""microgpt_c: microgpt's scalar-autograd GPT with its engine in C."""
from .model import Config, Run, Tokenizer, load_docs, make_engine

__all__ = ["Config", "Run", "Tokenizer", "load_docs", "make_engine"]
