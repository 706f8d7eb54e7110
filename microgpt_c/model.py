"""microgpt's model, optimiser, tokenizer and sampler, written once for either
engine. An engine E supplies the vector ops (embed, rmsnorm, linear, attention,
...) and builds them into its own scalar graph; SPEC.md says what each builds."""
import io
import math
import random
from dataclasses import dataclass
from importlib import resources

import numpy as np


@dataclass(frozen=True)
class Config:
    """The model's sizes; a size that cannot make a model is a ValueError."""

    n_layer: int = 1
    n_embd: int = 16
    n_head: int = 4
    block_size: int = 16

    def __post_init__(self):
        if self.n_layer < 0:
            raise ValueError(f"n_layer must be 0 or more, not {self.n_layer}")
        for name in ("n_embd", "n_head", "block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be 1 or more, not {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd {self.n_embd} is not a multiple of n_head {self.n_head}")


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


def param_shapes(cfg, vocab_size):
    """Parameter matrices (rows, cols) in the reference's creation order."""
    d = cfg.n_embd
    shapes = {"wte": (vocab_size, d), "wpe": (cfg.block_size, d), "lm_head": (vocab_size, d)}
    for i in range(cfg.n_layer):
        for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo"):
            shapes[f"layer{i}.{name}"] = (d, d)
        shapes[f"layer{i}.mlp_fc1"] = (4 * d, d)
        shapes[f"layer{i}.mlp_fc2"] = (d, 4 * d)
    return shapes


def init_params(E, cfg, vocab_size, rng, std=0.08):
    shapes = param_shapes(cfg, vocab_size)
    flat = [rng.gauss(0, std) for nout, nin in shapes.values() for _ in range(nout * nin)]
    return E.create_params(shapes, flat)


def gpt(E, P, cfg, token, pos, keys, values):
    """Logits for the next token at position pos; appends this position's
    keys and values to the per-layer caches."""
    x = E.embed(P["wte"], P["wpe"], token, pos)
    x = E.rmsnorm(x)
    for li in range(cfg.n_layer):
        x_residual = x
        x = E.rmsnorm(x)
        q = E.linear(x, P[f"layer{li}.attn_wq"])
        keys[li].append(E.linear(x, P[f"layer{li}.attn_wk"]))
        values[li].append(E.linear(x, P[f"layer{li}.attn_wv"]))
        x = E.attention(q, keys[li], values[li], cfg.n_head)
        x = E.linear(x, P[f"layer{li}.attn_wo"])
        x = E.add(x, x_residual)
        x_residual = x
        x = E.rmsnorm(x)
        x = E.relu(E.linear(x, P[f"layer{li}.mlp_fc1"]))
        x = E.linear(x, P[f"layer{li}.mlp_fc2"])
        x = E.add(x, x_residual)
    return E.linear(x, P["lm_head"])


def doc_loss(E, P, cfg, tokens, replay=True):
    """The loss node of a document (a list of token ids). With replay, the C
    engine records the ops once per document length and replays them after."""
    n = min(cfg.block_size, len(tokens) - 1)
    return E.run(lambda t: loss_over(E, P, cfg, t, n), tokens, key=("doc_loss", n) if replay else None)


def loss_over(E, P, cfg, tokens, n):
    """Mean next-token loss over the first n positions of tokens."""
    keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]
    losses = [E.nll(gpt(E, P, cfg, tokens[pos], pos, keys, values), tokens[pos + 1]) for pos in range(n)]
    return E.mean(losses)


class Adam:
    """The reference's Adam with linear learning-rate decay, elementwise over
    the flat parameter arrays, each operation as the reference orders it, in
    place (no temporaries to allocate each step). `pow(x, p, out)` is the
    engine's elementwise power: numpy's ** 0.5 is a sqrt, which differs from the
    C library's pow, which Python's ** calls, in the last bit."""

    def __init__(self, n, lr, num_steps, pow, beta1=0.85, beta2=0.99, eps=1e-8):
        self.lr, self.num_steps, self.pow = lr, num_steps, pow
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m, self.v = np.zeros(n), np.zeros(n)
        self._t, self._u = np.empty(n), np.empty(n)

    def step(self, p, g, step):
        """One update of p (in place) from gradient g, at step `step`."""
        b1, b2, m, v, t, u = self.beta1, self.beta2, self.m, self.v, self._t, self._u
        lr_t = self.lr * (1 - step / self.num_steps)
        m *= b1  # m = beta1 * m + (1 - beta1) * g
        m += np.multiply(g, 1 - b1, out=t)
        v *= b2  # v = beta2 * v + (1 - beta2) * g ** 2
        v += np.multiply(self.pow(g, 2, t), 1 - b2, out=t)
        np.divide(m, 1 - b1 ** (step + 1), out=t)  # m_hat
        np.divide(v, 1 - b2 ** (step + 1), out=u)  # v_hat
        self.pow(u, 0.5, u)
        u += self.eps
        t *= lr_t  # p -= lr_t * m_hat / (v_hat ** 0.5 + eps)
        t /= u
        p -= t


def sample(E, P, cfg, tok, rng, temperature=0.5, prefix=""):
    """One name: from BOS and then the prefix's characters (fed through the
    model, filling the KV cache), draw tokens at this temperature until BOS or
    until block_size positions are used. The name includes the prefix."""
    E.reset()
    keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]
    context, out = tok.encode(prefix)[:-1], list(prefix)  # BOS, then the prefix
    for pos in range(cfg.block_size):
        logits = E.run(lambda t: gpt(E, P, cfg, t[0], pos, keys, values), [context[pos]])
        if pos + 1 < len(context):
            continue  # the prefix's next character is given, not drawn
        probs = E.softmax(E.scale(logits, temperature**-1))
        token = rng.choices(range(tok.vocab_size), weights=E.values(probs))[0]
        if token == tok.bos:
            break
        context.append(token)
        out.append(tok.chars[token])
    return "".join(out)


def make_engine(engine="c", mode="exact"):
    if engine == "python":
        if mode != "exact":
            raise ValueError("the pure-Python engine has exact mode only")
        from .pyengine import PyEngine
        return PyEngine()
    if engine == "c":
        from .cengine import CEngine
        return CEngine(mode)
    if engine == "torch":  # the benchmark's outside anchor; PyTorch is not a dependency
        if mode != "eager":
            raise ValueError("the PyTorch engine has eager mode only")
        from .torchengine import TorchEngine
        return TorchEngine()
    raise ValueError(f"engine must be 'c' or 'python', not {engine!r}")


class Run:
    """One training run as the reference does it: one random stream seeded
    once drives the document shuffle, the parameter init, then sampling."""

    def __init__(self, cfg=None, docs=None, seed=42, steps=1000, lr=0.01, engine="c", mode="exact"):
        if steps < 0:
            raise ValueError(f"steps must be 0 or more, not {steps}")
        if not math.isfinite(lr):
            raise ValueError(f"the learning rate must be a finite number, not {lr}")
        self.cfg = cfg or Config()
        self.steps, self.seed = steps, seed
        self.rng = random.Random(seed)
        self.docs = list(load_docs() if docs is None else docs)
        self.rng.shuffle(self.docs)
        self.tok = Tokenizer(self.docs)
        self.E = make_engine(engine, mode)
        self.P = init_params(self.E, self.cfg, self.tok.vocab_size, self.rng)
        self.num_params = sum(r * c for r, c in param_shapes(self.cfg, self.tok.vocab_size).values())
        self.adam = Adam(self.num_params, lr, steps, self.E.pow)
        self.step = 0

    def train_step(self):
        """One step on the next document; returns its loss."""
        E, step = self.E, self.step
        E.reset()
        loss = doc_loss(E, self.P, self.cfg, self.tok.encode(self.docs[step % len(self.docs)]))
        E.backward(loss)
        E.step_params(lambda p, g: self.adam.step(p, g, step))
        self.step += 1
        return E.value(loss)

    def train(self, on_step=None):
        """Train to the end of the schedule (self.steps), calling on_step(step,
        loss) after each step (counted from 1); returns the losses."""
        losses = []
        while self.step < self.steps:
            losses.append(self.train_step())
            if on_step:
                on_step(self.step, losses[-1])
        return losses

    def sample(self, num_samples=20, temperature=0.5, prefix=""):
        """Names drawn from the model, each starting with prefix."""
        if not temperature > 0 or not math.isfinite(temperature):
            raise ValueError(f"temperature must be a positive number, not {temperature}")
        unknown = sorted(set(prefix) - set(self.tok.chars))
        if unknown:
            raise ValueError(f"the prefix has characters not in the vocabulary: {', '.join(map(repr, unknown))}")
        if len(prefix) >= self.cfg.block_size:
            raise ValueError(f"the prefix must be shorter than block_size ({self.cfg.block_size}), "
                             f"not {len(prefix)} characters")
        return [sample(self.E, self.P, self.cfg, self.tok, self.rng, temperature, prefix)
                for _ in range(num_samples)]

    def save(self, path):
        """Write this run's whole state to a checkpoint (checkpoint.py)."""
        from .checkpoint import save
        save(self, path)

    @classmethod
    def load(cls, path, engine="c", mode=None):
        """The run saved at path, ready to train on or sample from. mode None
        is the checkpoint's (exact on the pure-Python engine, its only mode)."""
        from .checkpoint import load
        c = load(path)
        mode = mode or ("exact" if engine == "python" else c["mode"])
        # A fresh run of the checkpoint's settings, then its state put in place.
        run = cls(c["cfg"], c["docs"], c["seed"], c["steps"], c["lr"], engine, mode)
        run.docs = c["docs"]
        run.rng.setstate(c["rng"])
        run.E.set_param_values(c["params"])
        run.adam.m[:], run.adam.v[:] = c["m"], c["v"]
        run.step = c["step"]
        return run
