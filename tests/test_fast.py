"""Fast mode: fused n-ary nodes and a reverse-creation-order backward. Its
gradients agree with exact mode's to 1e-12 relative (or 1e-15 absolute), and
its training stays on the reference's trajectory."""
import os
import random

import numpy as np
import pytest

from conftest import DEFAULT, DOCS, SMALL, grads
from microgpt_c import Run, Tokenizer, make_engine
from microgpt_c.model import doc_loss, init_params

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "microgpt_seed42.txt")


def first_step(mode, cfg, doc, seed):
    E, tok = make_engine("c", mode), Tokenizer(DOCS)
    P = init_params(E, cfg, tok.vocab_size, random.Random(seed))
    loss = doc_loss(E, P, cfg, tok.encode(doc))
    E.backward(loss)
    return E.value(loss), grads(E)


@pytest.mark.parametrize("cfg,ndocs", [(DEFAULT, 60), (SMALL, 15)],
                         ids=["default", "2layer"])
def test_gradients_agree_with_exact(cfg, ndocs):
    rng = random.Random(0)
    docs = rng.sample(DOCS, ndocs) + ["a", "christopherjohnathanalexander"]
    for i, doc in enumerate(docs):
        exact_loss, exact = first_step("exact", cfg, doc, seed=i)
        fast_loss, fast = first_step("fast", cfg, doc, seed=i)
        assert fast_loss == exact_loss  # the forward values are computed in the same order
        err = np.abs(fast - exact)
        ok = (err <= 1e-12 * np.abs(exact)) | (err <= 1e-15)
        assert ok.all(), (doc, np.flatnonzero(~ok)[:5], err[~ok][:5])
        assert np.count_nonzero(exact) > len(exact) // 4


def test_training_stays_within_1e3_of_the_reference():
    with open(GOLDEN) as f:
        golden = [float(ln.split()[-1]) for ln in f if ln.startswith("step ")]
    run = Run(mode="fast")
    losses = [run.train_step() for _ in range(1000)]
    assert len(losses) == len(golden) == 1000
    assert max(abs(a - b) for a, b in zip(losses, golden)) <= 1e-3


def test_backward_once_per_graph():
    """The tape's reverse walk (per-op fast mode; the whole-document kernel's
    own refusal is tested in test_doc_fast.py)."""
    E, tok, cfg = make_engine("c", "fast"), Tokenizer(DOCS), DEFAULT
    P = init_params(E, cfg, tok.vocab_size, random.Random(0))
    loss = doc_loss(E, P, cfg, tok.encode("emma"), replay=False)
    E.backward(loss)
    with pytest.raises(ValueError, match="once per graph"):
        E.backward(loss)
    E.reset()
    E.backward(doc_loss(E, P, cfg, tok.encode("emma"), replay=False))  # fine after a reset
