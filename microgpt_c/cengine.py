"""The C engine: the model's vector ops as calls into the C node store.

A vector is (first node id, length): every C vector op puts its outputs on
consecutive ids. A matrix is (first id, rows, cols), row-major. Node values and
gradients are numpy views of the store's arrays: a view keeps the store alive,
and is valid until the store next grows (a new node beyond its capacity)."""
import numpy as np

from ._engine import ffi, lib

MODES = {"exact": lib.MG_EXACT, "fast": lib.MG_FAST}
_ERRORS = {lib.MG_ENOMEM: MemoryError, lib.MG_EMATH: ArithmeticError}
_FAST_POW = {2: np.square, 0.5: np.sqrt}  # what numpy's x ** 2 and x ** 0.5 do: 2-5x faster


class _Memory:
    """n doubles at ptr in store s: numpy's base object for a view, keeping
    the store alive as long as the view."""

    def __init__(self, s, ptr, n):
        self.s = s
        self.__array_interface__ = {"data": (int(ffi.cast("uintptr_t", ptr)), False),
                                    "shape": (n,), "typestr": "<f8", "version": 3}


class CEngine:
    name = "c"

    def __init__(self, mode="exact"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
        s = lib.mg_new(MODES[mode])
        if s == ffi.NULL:
            raise MemoryError("cannot allocate the node store")
        self.s = ffi.gc(s, lib.mg_free)
        self.v = lib.mg_view_of(self.s)  # values, gradients, counts, error message
        self.mode = mode
        self._programs = {}  # run() key -> (program index, fn's result)
        self._param_views = (None, None)
        self.generation = 0  # resets so far: a Value made in another generation is stale

    def _ok(self, r):
        """The one place a C error code becomes a Python exception."""
        if r < 0:
            raise _ERRORS.get(r, ValueError)(ffi.string(self.v.err).decode())
        return r

    def data(self):
        """Values of all nodes, a view."""
        return np.asarray(_Memory(self.s, self.v.val, self.v.n))

    def grads(self):
        """Gradients of all nodes, a view."""
        return np.asarray(_Memory(self.s, self.v.grad, self.v.n))

    def param_views(self):
        """(values, gradients) of the parameters, views (made again only when
        the store's arrays have moved)."""
        key = (self.v.val, self.v.grad, self.v.nparams)
        if self._param_views[0] != key:
            n = self.v.nparams
            self._param_views = key, (np.asarray(_Memory(self.s, self.v.val, n)),
                                      np.asarray(_Memory(self.s, self.v.grad, n)))
        return self._param_views[1]

    def param_values(self):
        """A copy of the parameters' values, in flat order."""
        return self.param_views()[0].copy()

    def set_param_values(self, flat):
        self.param_views()[0][:] = flat

    def create_params(self, shapes, flat):
        flat = np.ascontiguousarray(flat, dtype=np.float64)
        start = self._ok(lib.mg_params(self.s, ffi.from_buffer("double[]", flat), len(flat)))
        params = {}
        for name, (nout, nin) in shapes.items():
            params[name] = (start, nout, nin)
            start += nout * nin
        return params

    def reset(self):
        """Drop every node but the parameters; Values made before are stale."""
        lib.mg_reset(self.s)
        self.generation += 1

    def leaf(self, x):
        return self._ok(lib.mg_leaf(self.s, float(x)))

    def run(self, fn, tokens, key=None):
        """fn(token refs): the ops fn calls see tokens through indices into the
        store's token list. With a key, the first run records the op calls and
        later runs with that key replay them in one C call (so the key must
        determine which ops fn makes), from a store just reset. A key
        ("doc_loss", ...) says fn is model.doc_loss's forward, whose backward
        exact mode may take by its cached order (mg_doc_program)."""
        self._ok(lib.mg_tokens(self.s, tokens, len(tokens)))
        refs = range(len(tokens))
        if key is None:
            return fn(refs)
        if key in self._programs:
            prog, out = self._programs[key]
            self._ok(lib.mg_replay(self.s, prog))
            return out
        self._ok(lib.mg_record_begin(self.s))
        try:
            out = fn(refs)
        finally:
            prog = lib.mg_record_end(self.s)
        self._ok(prog)
        if isinstance(key, tuple) and key[0] == "doc_loss":  # model.doc_loss's graph: see mg_doc_program
            self._ok(lib.mg_doc_program(self.s, prog))
        self._programs[key] = prog, out
        return out

    def embed(self, wte, wpe, token, pos):
        n = wte[2]
        return self._ok(lib.mg_embed(self.s, wte[0], wte[1], wpe[0], wpe[1], n, token, pos)), n

    def add(self, a, b):
        return self._ok(lib.mg_vadd(self.s, a[0], b[0], a[1])), a[1]

    def relu(self, x):
        return self._ok(lib.mg_vrelu(self.s, x[0], x[1])), x[1]

    def scale(self, x, c):
        return self._ok(lib.mg_scale(self.s, x[0], x[1], c)), x[1]

    def rmsnorm(self, x):
        return self._ok(lib.mg_rmsnorm(self.s, x[0], x[1])), x[1]

    def linear(self, x, w):
        return self._ok(lib.mg_linear(self.s, x[0], x[1], w[0], w[1])), w[1]

    def softmax(self, x):
        return self._ok(lib.mg_softmax(self.s, x[0], x[1])), x[1]

    def attention(self, q, keys, values, n_head):
        t = len(keys)
        return self._ok(lib.mg_attention(self.s, q[0], q[1], n_head, [k[0] for k in keys],
                                         [v[0] for v in values], t)), q[1]

    def nll(self, logits, target):
        return self._ok(lib.mg_nll(self.s, logits[0], logits[1], target))

    def mean(self, losses):
        return self._ok(lib.mg_mean(self.s, losses, len(losses)))

    def backward(self, loss):
        self._ok(lib.mg_backward(self.s, loss))

    def value(self, x):
        return self.values((x, 1))[0]

    def values(self, x):
        if not (0 <= x[0] and 0 <= x[1] and x[0] + x[1] <= self.v.n):
            raise ValueError(f"nodes [{x[0]}, {x[0]}+{x[1]}) are not in the store's {self.v.n}")
        return ffi.unpack(self.v.val + x[0], x[1])

    def step_params(self, update):
        """update(data, grad) on views of the parameters, then zero the grads."""
        data, grad = self.param_views()
        update(data, grad)
        grad[:] = 0.0

    def pow(self, x, p, out):
        """out = x ** p elementwise (float64 arrays): in exact mode with the C
        library's pow, as Python's ** is (numpy's ** 0.5 is a sqrt, which
        differs in the last bit)."""
        if self.mode == "fast":
            fast = _FAST_POW.get(p)
            return fast(x, out=out) if fast else np.power(x, p, out=out)
        if x.dtype != np.float64 or out.dtype != np.float64 or x.shape != out.shape:
            raise ValueError("pow needs two float64 arrays of one shape")
        self._ok(lib.mg_vpow(self.s, ffi.from_buffer("double[]", out, require_writable=True),
                             ffi.from_buffer("double[]", x), x.size, p))
        return out
