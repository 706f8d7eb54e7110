"""microgpt's model, optimiser and sampler, written once for every engine. An
engine E (engine.py) supplies the vector ops (embed, rmsnorm, linear,
attention, ...) and builds them into its own graph; docs/graph.md says what
each builds."""
import math
from array import array


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
        L = f"layer{li}."
        x_residual = x
        x = E.rmsnorm(x)
        q = E.linear(x, P[L + "attn_wq"])
        keys[li].append(E.linear(x, P[L + "attn_wk"]))
        values[li].append(E.linear(x, P[L + "attn_wv"]))
        x = E.attention(q, keys[li], values[li], cfg.n_head)
        x = E.linear(x, P[L + "attn_wo"])
        x = E.add(x, x_residual)
        x_residual = x
        x = E.rmsnorm(x)
        x = E.relu(E.linear(x, P[L + "mlp_fc1"]))
        x = E.linear(x, P[L + "mlp_fc2"])
        x = E.add(x, x_residual)
    return E.linear(x, P["lm_head"])


def doc_loss(E, P, cfg, tokens, kernel=True):
    """The loss node of a document (a list of token ids): the mean next-token
    loss over its first n positions. The engine makes it (E.doc_loss) and may
    take its shortcut, a kernel for the whole document, unless kernel is
    False: then it builds every op."""
    n = min(cfg.block_size, len(tokens) - 1)

    def build(t):
        return loss_over(E, P, cfg, t, n)

    return E.doc_loss(P, cfg, tokens, n, build) if kernel else E.run(build, tokens)


def doc_value(E, P, cfg, tokens):
    """doc_loss's value, a float, from the forward only: no gradient is
    taken (the held-out loss). It drops the graph since the last reset."""
    n = min(cfg.block_size, len(tokens) - 1)
    return E.forward_loss(P, cfg, tokens, n, lambda t: loss_over(E, P, cfg, t, n))


def loss_over(E, P, cfg, tokens, n):
    """Mean next-token loss over the first n positions of tokens."""
    keys, values = [[] for _ in range(cfg.n_layer)], [[] for _ in range(cfg.n_layer)]
    losses = [E.nll(gpt(E, P, cfg, tokens[pos], pos, keys, values), tokens[pos + 1]) for pos in range(n)]
    return E.mean(losses)


class Adam:
    """The reference's Adam with linear learning-rate decay: its settings and
    its moments m and v (flat arrays of doubles, one per parameter). The
    engine runs the update (Engine.adam_step): update() below, or the C
    engine's bit-identical kernel (csrc/adam.c)."""

    def __init__(self, n, lr, decay, beta1=0.85, beta2=0.99, eps=1e-8):
        self.lr, self.decay = lr, decay
        self.beta1, self.beta2, self.eps = beta1, beta2, eps
        self.m, self.v = array("d", bytes(8 * n)), array("d", bytes(8 * n))

    def factors(self, step):
        """The step's learning rate and the moments' bias corrections, as the
        reference computes them (Python floats: ** is the C library's pow)."""
        lr_t = self.lr * (1 - step % self.decay / self.decay)  # past the decay, it starts again from lr
        return lr_t, 1 - self.beta1 ** (step + 1), 1 - self.beta2 ** (step + 1)

    def update(self, p, g, step, pow):
        """Update p (a float64 numpy array, in place) from gradient g, each
        operation as the reference orders it. pow(x, e, out) is the engine's
        elementwise power: numpy's ** 0.5 is a sqrt, which differs in the last
        bit from the C library's pow that Python's ** calls."""
        import numpy as np  # only the numpy engines' training path needs it

        lr_t, c1, c2 = self.factors(step)
        b1, b2, m, v = self.beta1, self.beta2, np.frombuffer(self.m), np.frombuffer(self.v)
        t, u = np.empty_like(p), np.empty_like(p)
        m *= b1  # m = beta1 * m + (1 - beta1) * g
        m += np.multiply(g, 1 - b1, out=t)
        v *= b2  # v = beta2 * v + (1 - beta2) * g ** 2
        v += np.multiply(pow(g, 2, t), 1 - b2, out=t)
        np.divide(m, c1, out=t)  # m_hat
        np.divide(v, c2, out=u)  # v_hat
        pow(u, 0.5, u)
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
        logits = E.logits(P, cfg, context[:pos + 1], lambda t: gpt(E, P, cfg, t[0], pos, keys, values))
        if pos + 1 < len(context):
            continue  # the prefix's next character is given, not drawn
        probs = E.softmax(E.scale(logits, temperature**-1))
        weights = E.values(probs)
        if not all(map(math.isfinite, weights)):  # the C engine refuses these where they are made
            raise ArithmeticError(f"sampling made a non-finite probability at position {pos}")
        token = rng.choices(range(tok.vocab_size), weights=weights)[0]
        if token == tok.bos:
            break
        context.append(token)
        out.append(tok.chars[token])
    return "".join(out)
