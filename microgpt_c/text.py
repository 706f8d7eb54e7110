"""Documents and the character tokenizer."""
import io
from importlib import resources


def load_docs(path=None):
    """The lines of a UTF-8 text file (the packaged names by default), stripped,
    blank lines dropped. A file that gives no documents is a ValueError."""
    if path is None:
        path = resources.files("microgpt_c") / "data" / "names.txt"
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None
    docs = [line.strip() for line in io.StringIO(text, newline=None) if line.strip()]
    if not docs:
        raise ValueError(f"{path}: no documents (no line has anything but whitespace)")
    return docs


class Tokenizer:
    """Characters of the documents, sorted; BOS is the id after the last one."""

    def __init__(self, docs):
        self.chars = sorted(set("".join(docs)))
        self.bos = len(self.chars)
        self.vocab_size = len(self.chars) + 1
        self._ids = {ch: i for i, ch in enumerate(self.chars)}

    def encode(self, doc):
        return [self.bos] + [self._ids[ch] for ch in doc] + [self.bos]
