"""PyTorch as an engine (float64 tensors, CPU, one thread): an outside anchor
for the benchmark. Mode eager runs the same model code, optimiser and sampler
on tensors, position by position; mode user trains as a PyTorch user writes
it (nanoGPT style): each layer over the whole document as matrix products
with a causal mask, Adam in place on the tensors (sampling as eager).
PyTorch is never a dependency; this module is only imported when asked for."""
import numpy as np
import torch

from .engine import Engine


class TorchEngine(Engine):
    """Vectors are 1-D float64 tensors, matrices 2-D; autograd does backward."""

    name = "torch"

    def __init__(self, mode):
        super().__init__(mode)
        torch.set_num_threads(1)  # one thread, as the C engine

    def create_params(self, shapes, flat):
        flat = np.asarray(flat, dtype=np.float64)
        self.params, start = {}, 0
        for name, (nout, nin) in shapes.items():
            values = flat[start:start + nout * nin].reshape(nout, nin)
            self.params[name] = torch.tensor(values, requires_grad=True)
            start += nout * nin
        return self.params

    def doc_loss(self, P, cfg, tokens, n, build):
        if self.mode != "user":
            return self.run(build, tokens)
        H, hd = cfg.n_head, cfg.n_embd // cfg.n_head
        idx, targets = torch.tensor(tokens[:n]), torch.tensor(tokens[1:n + 1])
        mask = torch.ones(n, n, dtype=torch.bool).tril()

        def rmsnorm(x):  # per position
            return x * ((x * x).mean(-1, keepdim=True) + 1e-5) ** -0.5

        x = rmsnorm(P["wte"][idx] + P["wpe"][:n])
        for li in range(cfg.n_layer):
            w = {name: P[f"layer{li}.{name}"] for name in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1",
                                                             "mlp_fc2")}
            h = rmsnorm(x)
            q, k, v = (torch.matmul(h, w[name].T).view(n, H, hd).transpose(0, 1)
                       for name in ("attn_wq", "attn_wk", "attn_wv"))
            att = torch.softmax((q @ k.transpose(1, 2) / hd**0.5).masked_fill(~mask, float("-inf")), dim=-1)
            x = x + (att @ v).transpose(0, 1).reshape(n, -1) @ w["attn_wo"].T
            x = x + torch.relu(rmsnorm(x) @ w["mlp_fc1"].T) @ w["mlp_fc2"].T
        return torch.nn.functional.cross_entropy(x @ P["lm_head"].T, targets)

    def adam_step(self, adam, step):
        """Mode user: the update in place on the tensors, the moments being
        views of adam.m and adam.v (so checkpoints see them); eager: Engine's."""
        if self.mode != "user":
            return super().adam_step(adam, step)
        lr_t, c1, c2 = adam.factors(step)
        b1, b2 = adam.beta1, adam.beta2
        ms, vs, start = torch.from_numpy(np.frombuffer(adam.m)), torch.from_numpy(np.frombuffer(adam.v)), 0
        with torch.no_grad():
            for p in self.params.values():
                m, v = (t[start:start + p.numel()].view_as(p) for t in (ms, vs))
                start += p.numel()
                if p.grad is not None:
                    m.mul_(b1).add_(p.grad, alpha=1 - b1)
                    v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                else:
                    m.mul_(b1), v.mul_(b2)
                p.sub_(lr_t * (m / c1) / ((v / c2).sqrt() + adam.eps))
        self.zero_grads()

    def reset(self):
        pass  # the last step's graph is freed with its tensors

    def run(self, fn, tokens):
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
