"""Exact mode's shortcuts keep every bit. Training runs through the
whole-document kernel (doc_exact.c): with the verifying mode on, each step
also builds the reference's nodes, runs its full sort and compares every
parameter's gradient (an error if one differs); training with it on and off
gives the same run, bit for bit, on several model shapes."""
import random

import pytest

from conftest import DOCS, bits

from microgpt_c import Config, Run, Tokenizer
from microgpt_c.cengine import CEngine
from microgpt_c.model import doc_loss, init_params

CONFIGS = {"default": Config(), "2layer": Config(n_layer=2, n_embd=24, n_head=3, block_size=12),
           "0layer": Config(n_layer=0), "1head": Config(n_head=1), "block8": Config(block_size=8)}
ODD = {"hd3": Config(n_embd=12, n_head=4, block_size=24), "hd1": Config(n_embd=6, n_head=6, n_layer=2),
       "wide": Config(n_embd=36, n_head=2, n_layer=3, block_size=20)}


@pytest.mark.parametrize("name,steps", [("default", 300), ("2layer", 200), ("0layer", 300), ("1head", 300),
                                        ("block8", 300)])
def test_checked_training_is_the_same_run(name, steps):
    plain, checked = Run(CONFIGS[name]), Run(CONFIGS[name])
    checked.E.verify = True
    for _ in range(steps):
        assert bits(plain.train_step()) == bits(checked.train_step())
        assert plain.E.nodes() == 1  # the kernel's loss: no node a user did not ask for
    assert bits(plain.E.param_values()) == bits(checked.E.param_values())
    assert bits(plain.adam.v) == bits(checked.adam.v)


@pytest.mark.parametrize("name", ODD)
def test_kernel_gradients_are_the_full_sorts(name):
    """Odd sizes (head sizes 3 and 1, three layers, documents longer than the
    block): the kernel's gradients equal the reference's full sort's."""
    cfg, tok, rng = ODD[name], Tokenizer(DOCS), random.Random(7)
    docs = rng.sample(DOCS, 12) + ["a", "christopherjohnathanalexander" * 2]
    for i, doc in enumerate(docs):
        got = []
        for whole in (True, False):
            E = CEngine()
            P = init_params(E, cfg, tok.vocab_size, random.Random(i))
            loss = doc_loss(E, P, cfg, tok.encode(doc), kernel=whole)  # kernel=False: every node, the full sort
            assert (E.nodes() == 1) == whole
            E.backward(loss)
            got.append((E.value(loss), E.param_grads()))
        assert bits(got[0][0]) == bits(got[1][0])
        assert bits(got[0][1]) == bits(got[1][1]), doc


def test_verifying_mode_names_a_differing_gradient():
    """The verifying mode is not vacuous: parameters changed between the
    forward and the backward give the kernel other numbers than the graph's
    nodes hold, and the comparison says so."""
    E, tok, cfg = CEngine(), Tokenizer(DOCS), Config()
    E.verify = True
    P = init_params(E, cfg, tok.vocab_size, random.Random(0))
    loss = doc_loss(E, P, cfg, tok.encode("emma"))
    assert E.nodes() > 1000  # the verifying mode builds the reference's nodes
    E.set_param_values(E.param_values() * 1.5)
    with pytest.raises(ArithmeticError, match="verifying: parameter"):
        E.backward(loss)


def test_random_shapes_give_the_full_sorts_gradients():
    """Shapes drawn at random (widths, heads, layers 0-3, blocks from 1,
    documents shorter and longer than the block): the kernel's gradients are
    the full sort's, bit for bit."""
    rng, tok = random.Random(11), Tokenizer(DOCS)
    for _ in range(40):
        n_head = rng.choice([1, 2, 3, 4])
        cfg = Config(n_layer=rng.randrange(4), n_embd=n_head * rng.randrange(1, 6), n_head=n_head,
                     block_size=rng.randrange(1, 20))
        seed = rng.randrange(1000)
        for doc in rng.sample(DOCS, 2) + ["".join(rng.choices("abcdefghij", k=rng.randrange(1, 25)))]:
            got = []
            for kernel in (True, False):
                E = CEngine()
                P = init_params(E, cfg, tok.vocab_size, random.Random(seed))
                loss = doc_loss(E, P, cfg, tok.encode(doc), kernel=kernel)
                E.backward(loss)
                got.append((E.value(loss), E.param_grads()))
            assert bits(got[0][0]) == bits(got[1][0]), (cfg, doc)
            assert bits(got[0][1]) == bits(got[1][1]), (cfg, doc)
