"""PyTorch as an engine (float64 tensors, eager, CPU, one thread): an outside
anchor for the benchmark, running the same model code, optimiser and sampler.
PyTorch is never a dependency; this module is only imported when asked for."""
import numpy as np
import torch

from .engine import Engine


class TorchEngine(Engine):
    """Vectors are 1-D float64 tensors, matrices 2-D; autograd does backward."""

    name = "torch"

    def __init__(self, mode):
        super().__init__(mode)
        torch.set_num_threads(1)  # tensors of 16 numbers: threads only add overhead

    def create_params(self, shapes, flat):
        flat = np.asarray(flat, dtype=np.float64)
        self.params, start = {}, 0
        for name, (nout, nin) in shapes.items():
            values = flat[start:start + nout * nin].reshape(nout, nin)
            self.params[name] = torch.tensor(values, requires_grad=True)
            start += nout * nin
        return self.params

    def reset(self):
        pass  # the last step's graph is freed with its tensors

    def run(self, fn, tokens, key=None):
        return fn(tokens)

    def embed(self, wte, wpe, token, pos):
        return wte[token] + wpe[pos]

    def add(self, a, b):
        return a + b

    def relu(self, x):
        return torch.relu(x)

    def scale(self, x, c):
        return x * c

    def rmsnorm(self, x):
        return x * ((x * x).mean() + 1e-5) ** -0.5

    def linear(self, x, w):
        return w @ x

    def softmax(self, x):
        return torch.softmax(x, 0)

    def attention(self, q, keys, values, n_head):
        t, hd = len(keys), len(q) // n_head
        k = torch.stack(keys).view(t, n_head, hd)
        v = torch.stack(values).view(t, n_head, hd)
        weights = torch.softmax(torch.einsum("hd,thd->ht", q.view(n_head, hd), k) / hd**0.5, dim=1)
        return torch.einsum("ht,thd->hd", weights, v).reshape(-1)

    def nll(self, logits, target):
        return -torch.log_softmax(logits, 0)[target]

    def mean(self, losses):
        return torch.stack(losses).mean()

    def backward(self, loss):
        loss.backward()

    def value(self, x):
        return x.item()

    def values(self, x):
        return x.tolist()

    def param_values(self):
        return np.concatenate([p.detach().numpy().ravel() for p in self.params.values()])

    def set_param_values(self, flat):
        start = 0
        with torch.no_grad():
            for p in self.params.values():
                p.copy_(torch.from_numpy(np.asarray(flat[start:start + p.numel()], np.float64)).view_as(p))
                start += p.numel()

    def param_grads(self):
        return np.concatenate([np.zeros(p.numel()) if p.grad is None else p.grad.numpy().ravel()
                               for p in self.params.values()])

    def zero_grads(self):
        for p in self.params.values():
            p.grad = None
