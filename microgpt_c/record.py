"""The model's numbers inside one forward pass: every vector model.gpt makes
and every head's attention weights, computed by the pure-Python engine from a
run's parameters. That engine is bit for bit the C engine's exact mode (the
tests say so), and it shows each softmax's weights, which the C engine's
kernel keeps inside. trace writes these numbers; Run.attention and the
attention command read the weights.

What is recorded is named by op, as model.gpt calls them for one position: a
linear's output by its weights (LINEAR; fc1's, which relu takes at once, has
no name), the others by how many of their kind the position has made
(IN_ORDER: the first rmsnorm is the embedding's, then a layer's attention's
and its MLP's, layer by layer)."""
from .model import doc_loss, param_shapes
from .pyengine import PyEngine

LINEAR = {"attn_wq": "q", "attn_wk": "k", "attn_wv": "v", "attn_wo": "attn_proj", "mlp_fc2": "mlp_out"}
IN_ORDER = {"rmsnorm": ("norm_attn", "norm_mlp"), "add": ("resid_attn", "resid_mlp"), "attention": ("attn_out",),
            "relu": ("mlp_hidden",)}


class Recording:
    """Keeps every vector model.gpt makes (by name) and, on the pure-Python
    engine, every head's attention weights, as lists of floats: put before
    an engine class (Recorder below; a test records the C engine's ops)."""

    def __init__(self, *args):
        super().__init__(*args)
        self.seen, self.heads = {}, []  # seen: name -> one vector per position
        self.names = {}  # a weight matrix's id -> its name, for the linear ops

    def create_params(self, shapes, flat):
        P = super().create_params(shapes, flat)
        self.names = {id(w): name for name, w in P.items()}
        return P

    def keep(self, name, x):
        self.seen.setdefault(name, []).append(self.values(x))
        return x

    def embed(self, wte, wpe, token, pos):
        self.counts = dict.fromkeys(IN_ORDER, 0)  # a new position
        return self.keep("x.embed", super().embed(wte, wpe, token, pos))

    def in_order(self, op, x):
        """x, the output of this position's next op of its kind, kept under its name."""
        i, names = self.counts[op], IN_ORDER[op]
        self.counts[op] += 1
        if op == "rmsnorm" and i == 0:
            return self.keep("x.norm0", x)
        i -= op == "rmsnorm"
        self.layer = f"layer{i // len(names)}."
        return self.keep(self.layer + names[i % len(names)], x)

    def rmsnorm(self, x):
        return self.in_order("rmsnorm", super().rmsnorm(x))

    def add(self, a, b):
        return self.in_order("add", super().add(a, b))

    def relu(self, x):
        return self.in_order("relu", super().relu(x))

    def attention(self, q, keys, values, n_head):
        x = self.in_order("attention", super().attention(q, keys, values, n_head))
        self.seen.setdefault(self.layer + "attn_weights", []).append(self.heads)  # its heads' weights
        self.heads = []
        return x

    def head_weights(self, q_h, k_h):
        weights = super().head_weights(q_h, k_h)
        self.heads.append(self.values(weights))
        return weights

    def linear(self, x, w):
        y = super().linear(x, w)
        layer, _, matrix = self.names[id(w)].rpartition(".")
        if matrix == "lm_head":  # and the probabilities nll computes from them (the same op, the same numbers)
            self.keep("probs", self.softmax(y))
            return self.keep("logits", y)
        return self.keep(f"{layer}.{LINEAR[matrix]}", y) if matrix in LINEAR else y


class Recorder(Recording, PyEngine):
    """The pure-Python engine, recording."""


def forward(run, tokens, values=None):
    """A Recorder that ran run's model (with its parameters now, or these
    values) over tokens, as a training step does (model.doc_loss), and the
    loss node."""
    R = Recorder()
    values = run.E.param_values() if values is None else values
    P = R.create_params(param_shapes(run.cfg, run.tok.vocab_size), values)
    return R, doc_loss(R, P, run.cfg, tokens, kernel=False)


def weights(rows, n_head):
    """A layer's recorded weights as an (npos, n_head, npos) array: position t
    attends to positions 0..t, zeros after (rows: per position, per head)."""
    import numpy as np

    w = np.zeros((len(rows), n_head, len(rows)))
    for t, heads in enumerate(rows):
        w[t, :, :t + 1] = heads
    return w


def attention(run, text):
    """Each layer's weights over BOS and text's characters (run checks the
    text): a list of (n_head, T, T) arrays, T = len(text) + 1."""
    R, _ = forward(run, run.tok.encode(text))
    return [weights(R.seen[f"layer{li}.attn_weights"], run.cfg.n_head).transpose(1, 0, 2)
            for li in range(run.cfg.n_layer)]
