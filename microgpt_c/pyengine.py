"""The pure-Python engine: the reference's scalar Value, and the model's vector
ops built from it exactly as the reference builds them (docs/graph.md defines
each op node by node). It is the baseline the C engine is measured and checked
against."""
import math
import numbers

from .engine import Engine


def real(x, what):
    """x, if it is a real number (bool and numpy's included): as it is if an
    int or a float, else as a float. Both engines' Values take nothing else."""
    if type(x) is float or type(x) is int:
        return x
    if isinstance(x, numbers.Real):
        return float(x)
    raise TypeError(f"{what} must be a real number, not {type(x).__name__}")


class DerivedOperators:
    """The operators the reference derives from +, * and **, for both engines'
    Values. Their nodes are the reference's: -a is a * -1, a - b is
    a + (b * -1), a / b is a * b**-1, so that is what _prev shows."""

    __slots__ = ()

    def __neg__(self):
        return self * -1

    def __radd__(self, other):
        return self + other

    def __sub__(self, other):
        return self + (-other)

    def __rsub__(self, other):
        return other + (-self)

    def __rmul__(self, other):
        return self * other

    def __truediv__(self, other):
        return self * other**-1

    def __rtruediv__(self, other):
        return other * self**-1


class Described:
    """What both engines' Values show: micrograd's .label, '' until set (kept
    in a slot only when set, so an op makes its node without it), and one
    repr, with floats (the pure-Python engine's 0 and 1 are ints)."""

    __slots__ = ("_label",)

    def __repr__(self):
        data, grad = (float(x) if isinstance(x, int) else x for x in (self.data, self.grad))
        return f"Value(data={data}, grad={grad})"

    @property
    def label(self):
        return getattr(self, "_label", "")

    @label.setter
    def label(self, text):
        self._label = str(text)


class Value(DerivedOperators, Described):
    """One scalar node: value, gradient, children, local gradients, and
    micrograd's symbol for the op that made it ('' for a leaf). A leaf takes
    a real number only; .data and .grad are plain attributes, as micrograd's
    (unchecked: the pure-Python engine computes what Python computes).

    Value(data, _children=(), _op='', label='') is micrograd's constructor:
    its lecture code runs as it is. A node made that way has no local
    gradients, so backward and _backward pass nothing through it to its
    children (micrograd's own Value class gives each op's node a _backward
    closure; here every node has the method, from its local gradients)."""

    __slots__ = ("data", "grad", "_children", "_local_grads", "_symbol")

    def __init__(self, data, _children=(), _op="", label="", _local_grads=()):
        # a leaf's number is checked; the common ones without a call
        self.data = data if _children or type(data) is float or type(data) is int else real(data, "a Value's data")
        self.grad = 0
        self._children = _children
        self._local_grads = _local_grads
        self._symbol = _op  # the symbol, or for ** the exponent (formatted only when asked)
        if label:
            self.label = label

    @property
    def _prev(self):
        """micrograd's children set."""
        return set(self._children)

    @property
    def _op(self):
        """micrograd's symbol for the op that made this node."""
        return self._symbol if type(self._symbol) is str else f"**{self._symbol}"

    def __add__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data + other.data, (self, other), "+", "", (1, 1))

    def __mul__(self, other):
        other = other if isinstance(other, Value) else Value(other)
        return Value(self.data * other.data, (self, other), "*", "", (other.data, self.data))

    def __pow__(self, other):
        if type(other) is not int and type(other) is not float and not isinstance(other, numbers.Real):
            return NotImplemented  # Python's TypeError then names both operands' types
        return Value(self.data**other, (self,), other, "", (other * self.data ** (other - 1),))

    def log(self):
        return Value(math.log(self.data), (self,), "log", "", (1 / self.data,))

    def exp(self):
        return Value(math.exp(self.data), (self,), "exp", "", (math.exp(self.data),))

    def relu(self):
        return Value(max(0, self.data), (self,), "ReLU", "", (float(self.data > 0),))

    def tanh(self):
        t = math.tanh(self.data)
        return Value(t, (self,), "tanh", "", (1 - t**2,))

    def _backward(self):
        """micrograd's: this node's grad passed to its children, one level."""
        for child, local_grad in zip(self._children, self._local_grads):
            child.grad += local_grad * self.grad

    def backward(self):
        # The reference's recursive depth-first post-order, made iterative so
        # deep graphs (bigger models) do not hit Python's recursion limit.
        topo, visited = [], {self}
        stack = [(self, iter(self._children))]
        while stack:
            v, children = stack[-1]
            for child in children:
                if child not in visited:
                    visited.add(child)
                    stack.append((child, iter(child._children)))
                    break
            else:
                stack.pop()
                topo.append(v)
        self.grad = 1
        for v in reversed(topo):  # v._backward(), inlined as the reference has it (a call per node: ~9% slower)
            for child, local_grad in zip(v._children, v._local_grads):
                child.grad += local_grad * v.grad


class PyEngine(Engine):
    """Vectors are lists of Values, matrices lists of rows, tokens ints."""

    name = "python"

    def create_params(self, shapes, flat):
        values = map(float, flat)
        params = {name: [[Value(next(values)) for _ in range(nin)] for _ in range(nout)]
                  for name, (nout, nin) in shapes.items()}
        self.params = [p for mat in params.values() for row in mat for p in row]
        return params

    def param_values(self):
        """A copy of the parameters' values, in flat order."""
        return floats([p.data for p in self.params])

    def set_param_values(self, flat):
        for p, d in zip(self.params, floats(flat).tolist()):
            p.data = d

    def param_grads(self):
        return floats([p.grad for p in self.params])

    def zero_grads(self):
        for p in self.params:
            p.grad = 0

    def reset(self):
        pass  # the graph of the last step is garbage-collected

    def run(self, fn, tokens):
        return fn(tokens)

    def embed(self, wte, wpe, token, pos):
        return [t + p for t, p in zip(wte[token], wpe[pos])]

    def add(self, a, b):
        return [x + y for x, y in zip(a, b)]

    def relu(self, x):
        return [xi.relu() for xi in x]

    def scale(self, x, c):
        return [xi * c for xi in x]

    def rmsnorm(self, x):
        ms = sum(xi * xi for xi in x) / len(x)
        scale = (ms + 1e-5) ** -0.5
        return [xi * scale for xi in x]

    def linear(self, x, w):
        return [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]

    def softmax(self, logits):
        max_val = max(val.data for val in logits)
        exps = [(val - max_val).exp() for val in logits]
        total = sum(exps)
        return [e / total for e in exps]

    def attention(self, q, keys, values, n_head):
        head_dim = len(q) // n_head
        out = []
        for h in range(n_head):
            hs = h * head_dim
            q_h = q[hs:hs + head_dim]
            k_h = [ki[hs:hs + head_dim] for ki in keys]
            v_h = [vi[hs:hs + head_dim] for vi in values]
            weights = self.head_weights(q_h, k_h)
            out.extend(sum(weights[t] * v_h[t][j] for t in range(len(v_h))) for j in range(head_dim))
        return out

    def head_weights(self, q_h, k_h):
        """One head's attention weights over the positions so far (a method
        of its own so that trace.py can record them)."""
        head_dim = len(q_h)
        logits = [sum(q_h[j] * k_h[t][j] for j in range(head_dim)) / head_dim**0.5 for t in range(len(k_h))]
        return self.softmax(logits)

    def nll(self, logits, target):
        return -self.softmax(logits)[target].log()

    def mean(self, losses):
        return (1 / len(losses)) * sum(losses)

    def backward(self, loss):
        loss.backward()

    def value(self, x):
        return x.data

    def values(self, x):
        return [v.data for v in x]

    @staticmethod
    def pow(x, e, out):
        """Python's float power (the C library's pow), as the reference's ** is."""
        out[:] = [xi**e for xi in x.tolist()]
        return out


def floats(xs):
    """xs as a float64 numpy array (imported here: the Value API needs no numpy)."""
    import numpy as np
    return np.asarray(xs, dtype=np.float64)
