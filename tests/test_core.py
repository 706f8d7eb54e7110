"""The reference core on its own: the CORE files of csrc/build_ffi.py, built
alone (their own small cdef, in a temporary directory), train the default
model for a few steps, called once per op from Python by the model code (no
kernels, Adam in Python), and equal the pure-Python engine bit for
bit: losses, every gradient, every parameter. This is the plain path that
everything faster must equal."""
import glob
import importlib.util
import os
import random
import re

import pytest
from conftest import DOCS, bits
from cffi import FFI

from microgpt_c import Config, Tokenizer
from microgpt_c.engine import Engine
from microgpt_c.model import Adam, doc_loss, init_params, param_shapes
from microgpt_c.pyengine import PyEngine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(REPO, "csrc")


def build_ffi():
    spec = importlib.util.spec_from_file_location("build_ffi", os.path.join(CSRC, "build_ffi.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def core(tmp_path_factory):
    """The CORE files compiled alone, with a cdef of the core's own functions
    (core.h's prototypes) and the view Python reads (microgpt.h's)."""
    b = build_ffi()
    tmp = tmp_path_factory.mktemp("core")
    public = open(os.path.join(CSRC, "microgpt.h")).read()
    header = open(os.path.join(REPO, "csrc", "core.h")).read()
    view = re.search(r"typedef struct \{.*?\} mg_view;", public, re.S)[0]
    protos = re.findall(r"^(?:int32_t|void|double|int|mg_store|mg_view) \*?\w+\([^;{]*\);", header, re.M)
    cdef = "\n".join(["#define MG_EXACT 0", "typedef struct mg_store mg_store;", view, *protos])
    ffi = FFI()
    ffi.cdef(cdef)
    sources = [os.path.join(REPO, f) for f in b.CORE if f.endswith(".c")]
    ffi.set_source("core_alone", '#include "core.h"', sources=sources, include_dirs=[CSRC],
                   extra_compile_args=b.FLAGS, libraries=["m"])
    so = ffi.compile(tmpdir=str(tmp))
    spec = importlib.util.spec_from_file_location("core_alone", so)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_core_is_the_core_files_alone(core):
    b = build_ffi()
    assert sum(len(open(os.path.join(REPO, f)).read().splitlines()) for f in b.CORE) <= 450
    for f in glob.glob(os.path.join(CSRC, "*.[ch]")):
        assert len(open(f).read().splitlines()) <= 450, f
    for f in b.CORE:  # the core includes nothing of the machinery
        includes = re.findall(r'#include "(.+?)"', open(os.path.join(REPO, f)).read())
        assert set(includes) <= {"microgpt.h", "core.h"}, (f, includes)


class CoreEngine(Engine):
    """The model's vector ops, each one call of the core (a vector is (first
    id, length), a matrix (first id, rows, cols)); Adam in Python."""

    name = "core"
    pow = staticmethod(PyEngine.pow)  # Python's float power, as the reference's **

    def __init__(self, lib, ffi):
        super().__init__("exact")
        self.lib, self.ffi = lib, ffi
        self.s = ffi.gc(lib.store_new(0), lib.store_free)
        self.v = lib.store_view(self.s)

    def ok(self, r):
        assert r >= 0, self.ffi.string(self.v.err).decode()
        return r

    def create_params(self, shapes, flat):
        start, params = self.ok(self.lib.store_params(self.s, list(map(float, flat)), len(flat))), {}
        for name, (nout, nin) in shapes.items():
            params[name] = (start, nout, nin)
            start += nout * nin
        return params

    def _numbers(self, ptr):
        import numpy as np
        return np.array(self.ffi.unpack(ptr, self.v.nparams), dtype=np.float64)

    def param_values(self):
        return self._numbers(self.v.val)

    def param_grads(self):
        return self._numbers(self.v.grad)

    def set_param_values(self, flat):
        for i, x in enumerate(flat.tolist()):
            self.v.val[i] = x

    def zero_grads(self):
        for i in range(self.v.nparams):
            self.v.grad[i] = 0.0

    def reset(self):
        self.lib.store_reset(self.s)

    def run(self, fn, tokens):
        self.ok(self.lib.store_tokens(self.s, tokens, len(tokens)))
        return fn(range(len(tokens)))

    def embed(self, wte, wpe, token, pos):
        return self.ok(self.lib.op_embed(self.s, wte[0], wte[1], wpe[0], wpe[1], wte[2], token, pos)), wte[2]

    def add(self, a, b):
        return self.ok(self.lib.op_vadd(self.s, a[0], b[0], a[1])), a[1]

    def relu(self, x):
        return self.ok(self.lib.op_vrelu(self.s, x[0], x[1])), x[1]

    def scale(self, x, c):
        return self.ok(self.lib.op_scale(self.s, x[0], x[1], c)), x[1]

    def rmsnorm(self, x):
        return self.ok(self.lib.op_rmsnorm(self.s, x[0], x[1])), x[1]

    def linear(self, x, w):
        return self.ok(self.lib.op_linear(self.s, x[0], x[1], w[0], w[1])), w[1]

    def softmax(self, x):
        return self.ok(self.lib.op_softmax(self.s, x[0], x[1])), x[1]

    def attention(self, q, keys, values, n_head):
        return self.ok(self.lib.op_attention(self.s, q[0], q[1], n_head, [k[0] for k in keys],
                                             [v[0] for v in values], len(keys))), q[1]

    def nll(self, logits, target):
        return self.ok(self.lib.op_nll(self.s, logits[0], logits[1], target))

    def mean(self, losses):
        return self.ok(self.lib.op_mean(self.s, losses, len(losses)))

    def backward(self, loss):
        self.ok(self.lib.op_backward(self.s, loss))

    def value(self, x):
        return self.v.val[x]

    def values(self, x):
        return self.ffi.unpack(self.v.val + x[0], x[1])


def train(E, steps, cfg=Config()):
    """The reference's first steps on engine E, as Run trains them: losses,
    each step's gradients, the parameters after."""
    rng = random.Random(42)
    docs = list(DOCS)
    rng.shuffle(docs)
    tok = Tokenizer(docs)
    P = init_params(E, cfg, tok.vocab_size, rng)
    n = sum(r * c for r, c in param_shapes(cfg, tok.vocab_size).values())
    adam, losses, grads = Adam(n, 0.01, 1000), [], []
    for step in range(steps):
        E.reset()
        loss = doc_loss(E, P, cfg, tok.encode(docs[step][:cfg.block_size]), kernel=False)
        E.backward(loss)
        losses.append(E.value(loss))
        grads.append(bits(E.param_grads()))
        E.adam_step(adam, step)
    return bits(losses), grads, bits(E.param_values())


def test_the_core_alone_trains_as_the_pure_python_engine(core):
    got = train(CoreEngine(core.lib, core.ffi), 3)
    want = train(PyEngine(), 3)
    assert got[0] == want[0]  # the losses
    assert got[1] == want[1]  # every gradient of every step
    assert got[2] == want[2]  # the parameters after three Adam steps
