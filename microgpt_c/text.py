"""Documents and the character tokenizer."""
import os
import re
import unicodedata

from .files import TEXT_LIMIT, read_bounded

# What a document may not hold, as sampled names would carry it to the
# terminal: control characters (Unicode category Cc: NUL, ESC, tab, DEL, ...),
# the line and paragraph separators, and the bidirectional overrides and
# isolates, which reorder what a terminal shows. (A quick test of a whole
# file, before the line-by-line one that names the line.)
INVISIBLE = "\u2028\u2029\u202a-\u202e\u2066-\u2069"
UNPRINTABLE = re.compile(f"[\x00-\x09\x0b\x0c\x0e-\x1f\x7f-\x9f{INVISIBLE}]")
NAMES = {"\u2028": "line separator", "\u2029": "paragraph separator"}
# The packaged texts, by the name --data takes for each (data/NOTICE says where austen.txt comes from).
PACKAGED = {"names": "names.txt", "austen": "austen.txt"}


def data_path(name):
    """The path of the packaged text called name (a key of PACKAGED), else
    name itself, a path (./names is a file of that name)."""
    return os.path.join(os.path.dirname(__file__), "data", PACKAGED[name]) if name in PACKAGED else name


def load_docs(path=None):
    """The lines of a UTF-8 text file (the packaged names by default), stripped,
    blank lines dropped; a leading byte order mark is not text. A file that
    is not a regular file of at most TEXT_LIMIT bytes, gives no documents, or
    has a character a terminal would not print as itself is a ValueError."""
    if path is None:
        path = data_path("names")
    data = read_bounded(path, TEXT_LIMIT, "data file")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text (byte {e.start} is {e.object[e.start]:#04x})") from None
    text = text.removeprefix("\ufeff")
    if "\r" in text:  # line ends as a text file reads them
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    if UNPRINTABLE.search(text):
        for number, line in enumerate(lines, 1):
            problem = unprintable(line.strip())
            if problem:
                raise ValueError(f"{path}: line {number} has {problem}: documents are printable text")
    docs = [line for line in map(str.strip, lines) if line]
    if not docs:
        raise ValueError(f"{path}: no documents (no line has anything but whitespace)")
    return docs


def unprintable(text):
    """What in text a document may not hold, described ('the control
    character ...'), or None."""
    for ch in text:
        if unicodedata.category(ch) == "Cc":
            return f"the control character {ch!r} (U+{ord(ch):04X})"
        if re.match(f"[{INVISIBLE}]", ch):
            return f"the invisible {NAMES.get(ch, 'bidirectional formatting character')} U+{ord(ch):04X}"
    return None


def check_docs(docs, what="docs"):
    """A ValueError unless docs is a non-empty list of non-empty strings of
    printable text (what load_docs gives), naming the first bad one."""
    if not isinstance(docs, list) or not docs:
        raise ValueError(f"{what} must be a non-empty list of documents")
    try:  # all at once (two passes in C); the loop below names what is wrong
        if all(docs) and not UNPRINTABLE.search("\n".join(docs)):
            return
    except TypeError:  # not all strings
        pass
    for i, doc in enumerate(docs):
        if not isinstance(doc, str) or not doc:
            raise ValueError(f"{what}[{i}] must be a non-empty string, not {doc!r}")
        problem = unprintable(doc) if UNPRINTABLE.search(doc) else None
        if problem:
            raise ValueError(f"{what}[{i}] has {problem}: documents are printable text")


class Tokenizer:
    """Characters of the documents, sorted; BOS is the id after the last one."""

    def __init__(self, docs):
        self.chars = sorted(set("".join(docs)))
        self.bos = len(self.chars)
        self.vocab_size = len(self.chars) + 1
        self._ids = {ch: i for i, ch in enumerate(self.chars)}

    def encode(self, doc):
        return [self.bos, *map(self._ids.__getitem__, doc), self.bos]
