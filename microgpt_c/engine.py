"""The interface every engine implements: the model code (model.py) and the
training run (run.py) use nothing else. An engine builds the model's vector ops
into its own graph; docs/graph.md says what each op computes."""
from abc import ABC, abstractmethod


class Engine(ABC):
    """Vectors, matrices and losses are whatever the engine makes them; the
    model code only passes them back. An engine that leaves out a method
    cannot be instantiated."""

    name = None  # each engine's; the registry (registry.py) lists them and their modes

    def __init__(self, mode="exact"):
        self.mode = mode

    # -- parameters and the optimiser --
    @abstractmethod
    def create_params(self, shapes, flat):
        """Parameter matrices {name: (rows, cols)} from the flat initial values,
        in order; returns {name: matrix} for the model code."""

    @abstractmethod
    def param_values(self):
        """A copy of the parameters' values, in flat order (a float64 numpy array)."""

    @abstractmethod
    def set_param_values(self, flat): ...

    @abstractmethod
    def param_grads(self):
        """A copy of the parameters' gradients, in flat order (a float64 numpy array)."""

    @abstractmethod
    def zero_grads(self): ...

    def adam_step(self, adam, step):
        """One Adam step (model.Adam: its settings and moments) on every
        parameter, then zero the gradients. Here: Adam.update, in numpy, on
        copies of the parameters."""
        p = self.param_values()
        adam.update(p, self.param_grads(), step, self.pow)
        self.set_param_values(p)
        self.zero_grads()

    @staticmethod
    def pow(x, e, out):
        """out = x ** e elementwise, for adam_step (float64 arrays)."""
        import numpy as np

        return np.power(x, e, out=out)

    # -- the graph of one step --
    def doc_loss(self, P, cfg, tokens, n, build):
        """model.doc_loss's loss node over the document's first n positions:
        build(tokens) makes it op by op (model.loss_over); an engine may take
        its shortcuts instead (a kernel for the whole document).
        Here: build."""
        return self.run(build, tokens)

    def forward_loss(self, P, cfg, tokens, n, build):
        """doc_loss's value (a float) with no backward to follow: the graph
        since the last reset is dropped. Here: build's forward, dropped after."""
        self.reset()
        loss = self.value(self.run(build, tokens))
        self.reset()
        return loss

    def logits(self, P, cfg, tokens, build):
        """The logits at the last of tokens' positions (model.sample's next
        token's), a vector: build(t) makes them op by op from the keys and
        values the earlier positions cached (model.gpt for the last token);
        an engine may compute them over all of tokens instead. Here: build."""
        return self.run(build, tokens[-1:])

    @abstractmethod
    def reset(self):
        """Drop the last step's graph."""

    @abstractmethod
    def run(self, fn, tokens):
        """fn(tokens) with the tokens as the engine's ops want them."""

    @abstractmethod
    def embed(self, wte, wpe, token, pos): ...

    @abstractmethod
    def add(self, a, b): ...

    @abstractmethod
    def relu(self, x): ...

    @abstractmethod
    def scale(self, x, c): ...

    @abstractmethod
    def rmsnorm(self, x): ...

    @abstractmethod
    def linear(self, x, w): ...

    @abstractmethod
    def softmax(self, x): ...

    @abstractmethod
    def attention(self, q, keys, values, n_head): ...

    @abstractmethod
    def nll(self, logits, target): ...

    @abstractmethod
    def mean(self, losses): ...

    @abstractmethod
    def backward(self, loss): ...

    @abstractmethod
    def value(self, x):
        """A scalar's value, a Python float."""

    @abstractmethod
    def values(self, x):
        """A vector's values, a list of floats."""
