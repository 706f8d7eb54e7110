"""The whole model on both engines: gradients bit-identical, trajectories
identical, the C exact engine equal to the reference's output, and gradients
that agree with finite differences."""
import random

import numpy as np
import pytest

from conftest import DEFAULT, DOCS, SMALL, bits, grads
from microgpt_c import Run, Tokenizer, make_engine
from microgpt_c.model import doc_loss, init_params


def loss_and_grads(E, cfg, doc, seed=42):
    tok = Tokenizer(DOCS)
    P = init_params(E, cfg, tok.vocab_size, random.Random(seed))
    loss = doc_loss(E, P, cfg, tok.encode(doc))
    E.backward(loss)
    return bits(E.value(loss)), bits(grads(E))


@pytest.mark.parametrize("cfg", [DEFAULT, SMALL], ids=["default", "2layer"])
@pytest.mark.parametrize("doc", ["emma", "a", "christopherjohnathan", DOCS[7]])
def test_model_gradients_bit_identical(cfg, doc):
    py_loss, py_grads = loss_and_grads(make_engine("python"), cfg, doc)
    c_loss, c_grads = loss_and_grads(make_engine("c"), cfg, doc)
    assert c_loss == py_loss
    assert len(c_grads) == len(py_grads)
    assert c_grads == py_grads
    assert sum(g != 0 for g in py_grads) > len(py_grads) // 4  # the gradient reached most parameters


@pytest.mark.slow
@pytest.mark.parametrize("cfg,steps", [(DEFAULT, 30), (SMALL, 6)], ids=["default", "2layer"])
def test_trajectory_identical(cfg, steps):
    """Steps of one schedule on both engines: same losses, same parameters,
    same samples, bit for bit, while the parameters move."""
    runs = [Run(cfg, DOCS, seed=42, steps=1000, engine=e) for e in ("python", "c")]
    losses = [[r.train_step() for _ in range(steps)] for r in runs]
    assert bits(losses[0]) == bits(losses[1])
    assert bits(runs[0].E.param_values()) == bits(runs[1].E.param_values())
    assert runs[0].sample(5) == runs[1].sample(5)


@pytest.mark.parametrize("cfg", [DEFAULT, SMALL], ids=["default", "2layer"])
def test_finite_differences(cfg):
    """Central differences of the loss agree with backward on sampled parameters."""
    E, tok = make_engine("c"), Tokenizer(DOCS)
    P = init_params(E, cfg, tok.vocab_size, random.Random(1))
    tokens = tok.encode("isabella")

    def loss(i, x):  # with parameter i set to x
        flat = E.param_values()
        flat[i] = x
        E.set_param_values(flat)
        E.reset()
        return E.value(doc_loss(E, P, cfg, tokens))

    E.backward(doc_loss(E, P, cfg, tokens))
    grad = grads(E)
    rng = np.random.default_rng(0)
    picks = rng.choice(np.flatnonzero(grad), 40, replace=False)
    h, start = 1e-5, E.param_values()
    for i in picks:
        up, down = loss(i, start[i] + h), loss(i, start[i] - h)
        E.set_param_values(start)
        fd = (up - down) / (2 * h)
        assert abs(fd - grad[i]) <= 1e-6 * max(1.0, abs(grad[i])) + 1e-9, (i, fd, grad[i])
