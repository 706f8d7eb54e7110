"""Documents and the character tokenizer."""
import os
import re
import unicodedata

# Unicode's control characters (category Cc) but the line breaks: a quick test
# of a whole file before the line-by-line one that names the line
CONTROL = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def load_docs(path=None):
    """The lines of a UTF-8 text file (the packaged names by default), stripped,
    blank lines dropped; a leading byte order mark is not text. A file that
    gives no documents, or has a control character (NUL, ESC, tab, ...: the
    sampled names would carry it to the terminal), is a ValueError."""
    if path is None:
        path = os.path.join(os.path.dirname(__file__), "data", "names.txt")
    try:
        with open(path, "rb") as f:
            text = f.read().decode("utf-8")
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None
    text = text.removeprefix("\ufeff")
    if "\r" in text:  # line ends as a text file reads them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if CONTROL.search(text):
        for number, line in enumerate(lines, 1):
            bad = control(line.strip())
            if bad:
                raise ValueError(f"{path}: line {number} has the control character {bad!r} (U+{ord(bad):04X}): "
                                 f"documents are printable text")
    docs = [line for line in map(str.strip, lines) if line]
    if not docs:
        raise ValueError(f"{path}: no documents (no line has anything but whitespace)")
    return docs


def control(text):
    """The first control character in text (Unicode category Cc), or None."""
    return next((ch for ch in text if unicodedata.category(ch) == "Cc"), None)


class Tokenizer:
    """Characters of the documents, sorted; BOS is the id after the last one."""

    def __init__(self, docs):
        self.chars = sorted(set("".join(docs)))
        self.bos = len(self.chars)
        self.vocab_size = len(self.chars) + 1
        self._ids = {ch: i for i, ch in enumerate(self.chars)}

    def encode(self, doc):
        return [self.bos] + [self._ids[ch] for ch in doc] + [self.bos]
