"""The model's numbers inside one forward pass: every vector model.gpt makes
(by its record names) and every head's attention weights, computed by the
pure-Python engine from a run's parameters. That engine is bit for bit the C
engine's exact mode (the tests say so), and it shows each softmax's weights,
which the C engine's fused attention op keeps inside. trace writes these
numbers; Run.attention and the attention command read the weights."""
from .model import doc_loss, param_shapes
from .pyengine import PyEngine


class Recorder(PyEngine):
    """The pure-Python engine, keeping every vector model.gpt shows it
    (record) and every head's attention weights, as lists of floats."""

    def __init__(self):
        super().__init__()
        self.seen, self.heads = {}, []  # seen: name -> one vector per position

    def record(self, name, x):
        if name.endswith(".attn_out"):  # the weights of the heads of the attention just computed
            layer = name.removesuffix("attn_out")
            self.seen.setdefault(layer + "attn_weights", []).append(self.heads)
            self.heads = []
        self.seen.setdefault(name, []).append(self.values(x))
        if name == "logits":  # the probabilities nll computes from them (the same op, so the same numbers)
            self.seen.setdefault("probs", []).append(self.values(self.softmax(x)))
        return x

    def head_weights(self, q_h, k_h):
        weights = super().head_weights(q_h, k_h)
        self.heads.append(self.values(weights))
        return weights


def forward(run, tokens, values=None):
    """A Recorder that ran run's model (with its parameters now, or these
    values) over tokens, as a training step does (model.doc_loss), and the
    loss node."""
    R = Recorder()
    values = run.E.param_values() if values is None else values
    P = R.create_params(param_shapes(run.cfg, run.tok.vocab_size), values)
    return R, doc_loss(R, P, run.cfg, tokens, kernel=False, record=R.record)


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
