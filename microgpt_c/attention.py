"""python -m microgpt_c attention --load PATH --text TEXT --out PATH.png: a
heat map per layer and head of what each position of TEXT attends to (the
model's softmax weights, as trace computes them), from a checkpoint."""
import sys

from .cli import described, flagged, message, require_numpy
from .files import check_paths
from .plot import attention_maps, check
from .run import Run


def labels(text):
    """The positions' tick labels: BOS, then each character (a space shown)."""
    return ["BOS"] + ["␣" if ch == " " else ch for ch in text]


def parser(p):
    described(p, __doc__)
    p.add_argument("--load", metavar="PATH", required=True, help="a checkpoint written by --save")
    p.add_argument("--text", required=True, help="what the model reads after BOS: characters of its vocabulary, "
                                                 "fewer than its block size")
    p.add_argument("--out", metavar="PATH.png", required=True, help="where to write the heat maps (needs matplotlib)")
    return p


def main(p, a):
    try:
        check_paths(inputs=[("--load", a.load)], outputs=[("--out", a.out)])
        require_numpy("reading a checkpoint")
        run = Run.load(a.load)
    except (ValueError, MemoryError) as e:
        p.error(message(e))
    try:
        layers = run.attention(a.text)  # quick: a forward pass over the text
    except ValueError as e:
        p.error(flagged(str(e), ("text",)))  # block_size is the checkpoint's, not a flag given
    try:
        check(a.out, "--out")  # a PNG, and matplotlib: before drawing
    except ValueError as e:
        p.error(str(e))
    try:
        attention_maps(a.out, layers, labels(a.text),
                       f"what each position attends to: {run.cfg.title()}, after step {run.step}")
    except OSError as e:
        p.error(f"cannot write {a.out}: {e.strerror or e}")
    n_layer, n_head = len(layers), run.cfg.n_head
    sys.stderr.write(f"{p.prog}: wrote the attention maps {a.out} ({n_layer * n_head} maps: {n_layer} "
                     f"layer{'s' * (n_layer > 1)} x {n_head} head{'s' * (n_head > 1)}, {len(a.text) + 1} "
                     f"positions each)\n")
