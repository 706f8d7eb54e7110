"""The C engine: the model's vector ops as calls into the C node store.

A vector is (first node id, length): every C vector op puts its outputs on
consecutive ids. A matrix is (first id, rows, cols), row-major. numpy is
imported only by what hands out arrays (checkpoints, tests): training does
not need it."""
from ._engine import ffi, lib
from .engine import Engine
from .model import param_shapes

MODES = {"exact": lib.MG_EXACT, "fast": lib.MG_FAST}
_ERRORS = {lib.MG_ENOMEM: MemoryError, lib.MG_EMATH: ArithmeticError}


class CEngine(Engine):
    name = "c"

    def __init__(self, mode="exact"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}, not {mode!r}")
        super().__init__(mode)
        s = lib.mg_new(MODES[mode])
        if s == ffi.NULL:
            raise MemoryError("cannot allocate the node store")
        self.s = ffi.gc(s, lib.mg_free)
        self.v = lib.mg_view_of(self.s)  # values, gradients, counts, error message
        self.verify = False
        doc = lib.mg_doc_new()
        if doc == ffi.NULL:
            raise MemoryError("cannot allocate the document kernel")
        self.doc = ffi.gc(doc, lib.mg_doc_free)
        self._doc_backward = lib.mg_doc_backward_exact if mode == "exact" else lib.mg_doc_backward
        self._doc_loss = None  # the loss node of the kernel's forward since the reset
        self._doc_layout = None, None, ()  # the parameters and config last checked, the kernel's arguments for them
        self._out = ffi.new("double[1]")  # a number C hands back: the kernel's loss, a node's value
        self._moments = None, None, ()  # Adam's m and v last seen, and mg_adam_step's arguments for them

    def _ok(self, r):
        """The one place a C error code becomes a Python exception."""
        if r < 0:
            if r == lib.MG_EBUSY:
                raise RuntimeError("a store is used by one thread at a time: another thread is inside it")
            raise _ERRORS.get(r, ValueError)(ffi.string(self.v.err).decode())
        return r

    @staticmethod
    def value_error(code=None):
        """The exception for this thread's last failed Value API call (its
        code, or the one mg_value_failed keeps)."""
        code = lib.mg_value_failed() if code is None else code
        return _ERRORS.get(code, ValueError)(ffi.string(lib.mg_value_error()).decode())

    def _read(self, first, n, grad=0):
        """A cffi array of the values (or gradients) of n nodes from first."""
        out = ffi.new("double[]", n)
        self._ok(lib.mg_read(self.s, first, n, grad, out))
        return out

    def _params(self, grad):
        """A float64 numpy copy of the parameters' values (or gradients)."""
        import numpy as np

        return np.frombuffer(ffi.buffer(self._read(0, self.v.nparams, grad)), np.float64).copy()

    def param_values(self):
        return self._params(0)

    def param_grads(self):
        return self._params(1)

    def set_param_values(self, flat):
        flat = list(map(float, flat))
        self._ok(lib.mg_write_params(self.s, flat, len(flat), 0))

    def nodes(self):
        """Nodes made since the last reset."""
        return self.v.n - self.v.nparams

    def zero_grads(self):
        self._ok(lib.mg_write_params(self.s, ffi.new("double[]", self.v.nparams), self.v.nparams, 1))

    def create_params(self, shapes, flat):
        flat = list(map(float, flat))
        start = self._ok(lib.mg_params(self.s, flat, len(flat)))
        params = {}
        for name, (nout, nin) in shapes.items():
            params[name] = (start, nout, nin)
            start += nout * nin
        return params

    def doc_loss(self, P, cfg, tokens, n, build=None):
        """The document's loss from the whole-document kernel's forward, as a
        leaf node; backward from it runs the kernel's backward (exact mode's:
        the reference's gradients, doc_exact.c). In the verifying mode, exact
        mode also builds build's nodes, whose backward then runs both ways
        and compares (`E.verify = True`: also Adam's cheap powers)."""
        self._doc_value = self._doc_forward(P, cfg, tokens, n)
        if self.verify and self.mode == "exact":
            self._doc_loss = self.run(build, tokens)
            graph = self.values((self._doc_loss, 1))[0]
            if graph != self._doc_value:
                raise ArithmeticError(f"verifying: the kernel's loss is {self._doc_value!r}, the graph's {graph!r}")
        else:
            self._doc_loss = self._ok(lib.mg_leaf(self.s, self._doc_value))
        return self._doc_loss

    def forward_loss(self, P, cfg, tokens, n, build=None):
        """By doc_fast.c's forward in either mode: its values are the
        reference's, operation for operation, and it builds no node."""
        self.reset()  # the kernel's saved activations are this document's now: no backward from an earlier loss
        return self._doc_forward(P, cfg, tokens, n)

    def logits(self, P, cfg, tokens, build=None):
        """By the whole-document forward over tokens (no node but the logits'
        leaves, to sample from with the reference's ops): its values are the
        reference's, so the samples are too."""
        self._doc_forward(P, cfg, tokens, len(tokens), ffi.NULL)
        V = P["wte"][1]
        out = ffi.new("double[]", V)
        self._doc_ok(lib.mg_doc_logits(self.doc, len(tokens) - 1, out, V))
        first = self._ok(lib.mg_leaf(self.s, out[0]))
        for i in range(1, V):  # on consecutive ids, a vector
            self._ok(lib.mg_leaf(self.s, out[i]))
        return first, V

    def _doc_forward(self, P, cfg, tokens, n, out=None):
        """The whole-document kernel's forward: the loss, a float (into out,
        if given; a NULL out computes the logits only)."""
        P0, cfg0, layout = self._doc_layout
        if P0 is not P or cfg0 is not cfg:  # once per parameters and config (a Config is read-only)
            layout = self._check_layout(P, cfg)
        out = self._out if out is None else out
        self._doc_ok(lib.mg_doc_forward(self.doc, self.v.val, *layout, tokens, len(tokens), n, out))
        return out[0] if out else None

    def _check_layout(self, P, cfg):
        """The kernel's arguments from nparams to block_size, for parameters P of config cfg."""
        shapes = param_shapes(cfg, P["wte"][1])
        if any(tuple(P[name][1:]) != shape for name, shape in shapes.items()):
            raise ValueError("doc_loss: the parameters are not this config's")
        offs = ffi.new("int64_t[]", [P[name][0] for name in shapes])
        layout = self.v.nparams, offs, len(offs), P["wte"][1], cfg.n_embd, cfg.n_head, cfg.n_layer, cfg.block_size
        self._doc_layout = P, cfg, layout
        return layout

    def _doc_ok(self, r):
        if r < 0:
            raise _ERRORS.get(r, ValueError)(ffi.string(lib.mg_doc_error(self.doc)).decode())

    def reset(self, keep=None):
        """Drop every node but the parameters: a training step's reset, one
        thread at a time. With keep (the Value API's reset, which waits its
        turn among threads), the Values (microgpt_c.Value) in keep stay valid
        as leaves: their data and grads are kept, the graph below them is
        dropped. Every other Value of this store made before is stale."""
        self._doc_loss = None
        if keep is None:
            self._ok(lib.mg_reset(self.s))
            return
        keep = list(keep)
        if not all(getattr(v, "store", None) is self for v in keep):
            raise ValueError("reset(keep=...) takes Values of this store")
        kept = ffi.new("mg_handle[]", len(keep))
        r = lib.mg_value_reset(self.s, [v._handle for v in keep], len(keep), kept)
        if r:
            raise self.value_error(r)
        for v, h in zip(keep, kept):
            v._handle = h
            v._as_leaf()

    def run(self, fn, tokens):
        """fn(token refs): the ops fn calls see tokens through indices into the
        store's token list."""
        self._ok(lib.mg_tokens(self.s, tokens, len(tokens)))
        return fn(range(len(tokens)))

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
        if len(values) != t:
            raise ValueError(f"attention needs as many values as keys, not {len(values)} and {t}")
        return self._ok(lib.mg_attention(self.s, q[0], q[1], n_head, [k[0] for k in keys],
                                         [v[0] for v in values], t)), q[1]

    def nll(self, logits, target):
        return self._ok(lib.mg_nll(self.s, logits[0], logits[1], target))

    def mean(self, losses):
        return self._ok(lib.mg_mean(self.s, losses, len(losses)))

    def backward(self, loss):
        if self._doc_loss is None:
            self._ok(lib.mg_backward(self.s, loss))
        elif loss == self._doc_loss and self.verify and self.mode == "exact":
            self._verify_backward(loss)
        elif loss == self._doc_loss:
            self._doc_ok(self._doc_backward(self.doc, self.v.val, self.v.grad, self.v.nparams, 1.0))
        else:  # the kernel's loss is a leaf: a node built on it, or an earlier one, would pass nothing on
            raise ValueError("since the reset, doc_loss ran the whole-document kernel: backward runs from its "
                             "last loss only (doc_loss(..., kernel=False) builds the ops instead)")

    def _verify_backward(self, loss):
        """The reference's backward through the graph's nodes (the full sort),
        then the kernel's from the same gradients: every parameter's must be
        the same double, or an error names the first that is not (the
        reference's gradients are kept)."""
        n = self.v.nparams
        before = self._read(0, n, 1)
        self._ok(lib.mg_backward(self.s, loss))
        ref = self._read(0, n, 1)
        self._ok(lib.mg_write_params(self.s, before, n, 1))
        self._doc_ok(lib.mg_doc_backward_exact(self.doc, self.v.val, self.v.grad, n, 1.0))
        got = self._read(0, n, 1)
        if ffi.buffer(got) != ffi.buffer(ref):
            i = next(i for i in range(n) if ffi.buffer(got)[8 * i:8 * i + 8] != ffi.buffer(ref)[8 * i:8 * i + 8])
            self._ok(lib.mg_write_params(self.s, ref, n, 1))
            raise ArithmeticError(f"verifying: parameter {i}'s gradient is {got[i]!r} by the kernel, {ref[i]!r} "
                                  "by the reference's backward")

    def value(self, x):
        if x == self._doc_loss:  # a leaf holding the number the kernel handed back
            return self._doc_value
        self._ok(lib.mg_read(self.s, x, 1, 0, self._out))
        return self._out[0]

    def values(self, x):
        return ffi.unpack(self._read(x[0], x[1]), x[1])

    def _mismatch(self):
        """Where the verifying mode has mg_adam count the powers the cheap way
        got wrong (every power is then also taken with pow)."""
        return ffi.new("int64_t *") if self.verify else ffi.NULL

    def _checked(self, slow, bad):
        if bad and bad[0]:
            raise ArithmeticError(f"adam: the cheap power differs from pow in {bad[0]} values")
        return slow

    def adam_step(self, adam, step):
        """The reference's Adam in C, in place on the store's parameters and
        gradients (zeroed after): in exact mode bit-identical to Adam.update
        with Python's pow; in fast mode its powers are x*x and sqrt(x), its
        bias corrections multipliers (adam.c). Returns how many powers called
        pow."""
        m, v, moments = self._moments
        if m is not adam.m or v is not adam.v:  # once per pair of moments (from_state replaces them)
            view = lambda x: ffi.from_buffer("double[]", x, require_writable=True)
            moments = view(adam.m), len(adam.m), view(adam.v), len(adam.v)
            self._moments = adam.m, adam.v, moments
        lr_t, bc1, bc2 = adam.factors(step)
        bad = self._mismatch()
        return self._checked(self._ok(lib.mg_adam_step(self.s, *moments, lr_t, adam.beta1, adam.beta2, bc1, bc2,
                                                       adam.eps, bad)), bad)

    def adam(self, p, g, m, v, lr_t, b1, b2, bc1, bc2, eps):
        """mg_adam on four distinct contiguous float64 numpy arrays of one
        length (g is zeroed). Returns how many powers called pow."""
        arrays = (p, g, m, v)
        if not all(getattr(a, "dtype", None) == "float64" and a.ndim == 1 and a.flags.c_contiguous
                   and a.flags.writeable and a.shape == p.shape for a in arrays):
            raise ValueError("adam needs four writable contiguous 1-d float64 arrays of one length")
        bad = self._mismatch()
        slow = lib.mg_adam(*(ffi.from_buffer("double[]", a) for a in arrays), p.size, lr_t, b1, b2, bc1, bc2, eps,
                           self.mode == "exact", bad)
        if slow < 0:
            raise ValueError("adam needs distinct arrays, bc1 and bc2 nonzero and eps > 0")
        return self._checked(slow, bad)
