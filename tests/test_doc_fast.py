"""Fast mode's whole-document kernel (csrc/doc_fast.c) against the
reference's graph (the core's ops and full backward): the same loss, bit for
bit, and every parameter gradient to 1e-12 relative (or 1e-15 absolute);
training on the reference's trajectory; bad input from Python is an
exception, never a crash."""
import os
import random

import numpy as np
import pytest

from conftest import DOCS, SMALL, bits, grads
from microgpt_c import Config, Run, Tokenizer
from microgpt_c.cengine import CEngine, ffi, lib
from microgpt_c.model import doc_loss, init_params, param_shapes

CONFIGS = {"default": Config(), "2layer": SMALL, "1head": Config(n_head=1), "block8": Config(block_size=8),
           "embd64": Config(n_embd=64, n_head=4, n_layer=2, block_size=20)}


def loss_and_grads(cfg, doc, seed, kernel):
    E, tok = CEngine("fast"), Tokenizer(DOCS)
    P = init_params(E, cfg, tok.vocab_size, random.Random(seed))
    loss = doc_loss(E, P, cfg, tok.encode(doc), kernel=kernel)  # kernel=False: the reference's nodes
    assert (E.nodes() == 1) == kernel  # the kernel makes one node: the loss
    E.backward(loss)
    return E.value(loss), grads(E)


@pytest.mark.parametrize("name", CONFIGS)
def test_kernel_agrees_with_the_reference_graph(name):
    cfg, rng = CONFIGS[name], random.Random(1)
    for i, doc in enumerate(rng.sample(DOCS, 6) + ["a", "christopherjohnathanalexander" * 2]):
        plain_loss, plain = loss_and_grads(cfg, doc, i, kernel=False)
        loss, g = loss_and_grads(cfg, doc, i, kernel=True)
        assert bits(loss) == bits(plain_loss)  # the forward does the reference's operations in its order
        err = np.abs(g - plain)
        ok = (err <= 1e-12 * np.abs(plain)) | (err <= 1e-15)
        assert ok.all(), (doc, np.flatnonzero(~ok)[:5], err[~ok][:5])


def test_training_stays_on_the_reference_trajectory():
    """Over the default 1,000 steps, within 1e-10 of exact mode's losses and
    equal to the golden output's printed digits."""
    with open(os.path.join(os.path.dirname(__file__), "golden", "microgpt_seed42.txt")) as f:
        golden = [ln.split()[-1] for ln in f if ln.startswith("step ")]
    fast, exact = Run(mode="fast"), Run()
    for printed in golden:
        a, b = fast.train_step(), exact.train_step()
        assert abs(a - b) <= 1e-10 and f"{a:.4f}" == printed


def engine_and_args(cfg=Config()):
    E, tok = CEngine("fast"), Tokenizer(DOCS)
    P = init_params(E, cfg, tok.vocab_size, random.Random(0))
    offs = [P[name][0] for name in param_shapes(cfg, tok.vocab_size)]
    args = dict(nparams=E.v.nparams, offs=offs, noffs=len(offs), vocab=tok.vocab_size, n_embd=cfg.n_embd,
                n_head=cfg.n_head, n_layer=cfg.n_layer, block_size=cfg.block_size, tokens=tok.encode("emma"),
                ntok=6, n=5)
    return E, P, tok, args


def forward(E, **a):
    loss = ffi.new("double *")
    return lib.mg_doc_forward(E.doc, E.v.val, a["nparams"], a["offs"], a["noffs"], a["vocab"], a["n_embd"],
                              a["n_head"], a["n_layer"], a["block_size"], a["tokens"], a["ntok"], a["n"], loss)


@pytest.mark.parametrize("change,says", [
    ({"vocab": 0}, "bad model size"), ({"n_embd": 15}, "bad model size"), ({"n_head": 0}, "bad model size"),
    ({"n_layer": -1}, "bad model size"), ({"block_size": 0}, "bad model size"), ({"n_embd": 1 << 20}, "bad model size"),
    ({"n": 0}, "positions need"), ({"n": 17}, "positions need"), ({"ntok": 5}, "positions need"),
    ({"noffs": 8}, "offsets"), ({"n_layer": 2}, "offsets"), ({"nparams": 100}, "not in the"),
    ({"offs": [0, 432, 688, 1120, 1376, 1632, 1888, 2144, 3200]}, "not in the"),
    ({"offs": [-1, 432, 864, 1296, 1552, 1808, 2064, 2320, 3344]}, "not in the"),
    ({"tokens": [26, 4, 12, 12, 27, 26]}, "token 4 is 27"), ({"tokens": [-1, 4, 12, 12, 0, 26]}, "token 0 is -1"),
])
def test_bad_sizes_offsets_and_tokens_are_refused(change, says):
    E, P, tok, args = engine_and_args()
    assert forward(E, **args) == 0
    assert forward(E, **{**args, **change}) == lib.MG_EARG
    assert says in ffi.string(lib.mg_doc_error(E.doc)).decode()
    # a refused forward leaves nothing to take the backward of, in either mode
    for backward in (lib.mg_doc_backward, lib.mg_doc_backward_exact):
        assert backward(E.doc, E.v.val, E.v.grad, E.v.nparams, 1.0) == lib.MG_EARG


def test_the_engine_raises_value_errors():
    E, P, tok, args = engine_and_args()
    cfg = Config()
    with pytest.raises(ValueError, match="token 2 is 99"):
        E.doc_loss(P, cfg, [26, 1, 99, 26], 3)
    with pytest.raises(ValueError, match="positions need"):
        E.doc_loss(P, cfg, [26, 1], 2)
    with pytest.raises(ValueError, match="not this config's"):
        E.doc_loss(P, Config(n_embd=8, n_head=2), [26, 1], 1)
    loss = E.doc_loss(P, cfg, [26, 1, 2, 26], 3)
    for backward in (lib.mg_doc_backward, lib.mg_doc_backward_exact):  # not the forward's parameter count
        assert backward(E.doc, E.v.val, E.v.grad, E.v.nparams - 1, 1.0) == lib.MG_EARG
    E.backward(loss)
    with pytest.raises(ValueError, match="once per graph"):
        E.backward(loss)
    E.reset()
    first, second = E.doc_loss(P, cfg, [26, 1, 2, 26], 3), E.doc_loss(P, cfg, [26, 4, 26], 2)
    for loss in (first, E.mean([first, second])):  # would pass nothing on: refused
        with pytest.raises(ValueError, match="backward runs from its last loss only"):
            E.backward(loss)
    E.backward(second)
    for backward in (lib.mg_doc_backward, lib.mg_doc_backward_exact):
        assert backward(ffi.NULL, E.v.val, E.v.grad, E.v.nparams, 1.0) == lib.MG_EARG
        assert backward(E.doc, ffi.NULL, E.v.grad, E.v.nparams, 1.0) == lib.MG_EARG
    assert lib.mg_doc_forward(ffi.NULL, E.v.val, 1, [0], 1, 1, 1, 1, 0, 1, [0, 0], 2, 1, ffi.new("double *")) \
        == lib.MG_EARG
    assert forward(E, **{**args, "tokens": ffi.NULL}) == lib.MG_EARG
    lib.mg_doc_free(ffi.NULL)


def test_a_non_finite_value_is_an_arithmetic_error():
    E, P, tok, args = engine_and_args()
    E.set_param_values(np.full(E.v.nparams, 1e300))
    with pytest.raises(ArithmeticError, match=r"made a non-finite number \(position \d+: "):
        E.doc_loss(P, Config(), tok.encode("emma"), 5)


@pytest.mark.parametrize("cfg", [Config(), SMALL], ids=["default", "2layer"])
def test_torch_user_mode_trains_as_the_eager_mode(cfg):
    """PyTorch as a user writes it (whole-document layers, in-place Adam)
    computes the same model as our model code on tensors (when installed)."""
    pytest.importorskip("torch")
    eager, user = Run(cfg, engine="torch", mode="eager"), Run(cfg, engine="torch", mode="user")
    for _ in range(20):
        assert abs(eager.train_step() - user.train_step()) <= 1e-10
    assert np.allclose(eager.E.param_values(), user.E.param_values(), rtol=0, atol=1e-12)
    assert np.allclose(eager.adam.v, user.adam.v, rtol=0, atol=1e-15)


def test_sampling_by_the_kernel_draws_the_reference_s_names():
    """model.sample on the C engine takes each position's logits from the
    kernel's forward over the context: the same names as the pure-Python
    engine, which builds the reference's nodes, prefix or not."""
    from conftest import TINY
    runs = [Run(TINY, DOCS, seed=5, steps=20, engine=e, mode=m) for e, m in
            (("python", "exact"), ("c", "exact"), ("c", "fast"))]
    for r in runs[1:]:
        r.E.set_param_values(runs[0].E.param_values())
    for prefix in ("", "ma"):
        names = [r.sample(num_samples=8, temperature=0.7, prefix=prefix) for r in runs]
        assert names[0] == names[1] == names[2] and all(n.startswith(prefix) for n in names[0])


def test_logits_are_refused_unless_a_forward_made_them():
    E, P, tok, args = engine_and_args()
    out = ffi.new("double[]", args["vocab"])
    assert lib.mg_doc_logits(E.doc, 0, out, args["vocab"]) == lib.MG_EARG  # no forward yet
    assert forward(E, **args) == 0
    assert lib.mg_doc_logits(E.doc, args["n"] - 1, out, args["vocab"]) == 0
    for pos, n, o in ((args["n"], args["vocab"], out), (-1, args["vocab"], out), (0, args["vocab"] - 1, out),
                      (0, args["vocab"], ffi.NULL)):
        assert lib.mg_doc_logits(E.doc, pos, o, n) == lib.MG_EARG
    assert lib.mg_doc_logits(ffi.NULL, 0, out, args["vocab"]) == lib.MG_EARG
