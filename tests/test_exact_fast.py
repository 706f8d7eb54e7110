"""Exact mode's shortcuts keep every bit. Training runs through the
whole-document kernel (doc_exact.c): with the verifying mode on, each step
also builds the reference's nodes, runs its full sort and compares every
parameter's gradient (an error if one differs); training with it on and off
gives the same run, bit for bit, on several model shapes. The op-by-op path
(whole_doc off: recorded programs, the order cached by position, row kernels
and lean replay) is checked the same way."""
import random

import numpy as np
import pytest

from conftest import DOCS, bits

from microgpt_c import Config, Run, Tokenizer
from microgpt_c.cengine import CEngine, lib
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
            loss = doc_loss(E, P, cfg, tok.encode(doc), replay=whole)  # replay=False: every node, the full sort
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


def op_path():
    """A C engine whose doc_loss builds the ops (recorded, then replayed)."""
    E = CEngine()
    E.whole_doc = False
    return E


def test_other_graphs_take_the_full_sort():
    """A graph not recorded by doc_loss caches nothing."""
    E, tok, cfg = op_path(), Tokenizer(DOCS), Config()
    P = init_params(E, cfg, tok.vocab_size, random.Random(0))
    E.backward(doc_loss(E, P, cfg, tok.encode("emma"), replay=False))
    E.reset()
    E.run(lambda t: E.linear(E.rmsnorm(E.embed(P["wte"], P["wpe"], t[0], 0)), P["lm_head"]), [3], key=1)
    assert E.v.pieces == 0


def test_doc_program_checks_its_shape():
    E, tok, cfg = op_path(), Tokenizer(DOCS), Config()
    P = init_params(E, cfg, tok.vocab_size, random.Random(0))
    E.run(lambda t: E.rmsnorm(E.embed(P["wte"], P["wpe"], t[0], 0)), [3], key=1)
    with pytest.raises(ValueError, match="not doc_loss's"):
        E._ok(lib.mg_doc_program(E.s, 0))
    with pytest.raises(ValueError, match="no program"):
        E._ok(lib.mg_doc_program(E.s, 5))


def test_a_lean_graph_has_a_backward_from_its_loss_only():
    E, tok, cfg = op_path(), Tokenizer(DOCS), Config()
    P = init_params(E, cfg, tok.vocab_size, random.Random(0))
    for doc in ("emma", "emma"):  # the second build is a replay with its whole order cached: lean
        E.reset()
        loss = doc_loss(E, P, cfg, tok.encode(doc))
        E.backward(loss)
    with pytest.raises(ValueError, match="only its loss"):
        E.backward(loss - 1)


def test_tokens_changed_before_backward_do_not_mislabel_the_cache():
    """Pieces are keyed by the targets the graph was built with; checking
    mode would name any gradient a mislabeled piece got wrong."""
    E, tok, cfg = op_path(), Tokenizer(DOCS), Config()
    E.verify = True
    P = init_params(E, cfg, tok.vocab_size, random.Random(0))
    E.backward(doc_loss(E, P, cfg, tok.encode("emma")))
    E.reset()
    loss = doc_loss(E, P, cfg, tok.encode("anna"))
    E._ok(lib.mg_tokens(E.s, [tok.bos] + [5] * 5, 6))
    E.backward(loss)
    for doc in ("anne", "anna", "emma", "ffff", "eeee"):
        E.reset()
        E.backward(doc_loss(E, P, cfg, tok.encode(doc)))
    assert E.v.pieces >= 8


def test_checking_mode_catches_a_graph_that_breaks_the_argument():
    """A program declared as doc_loss's whose position 1 reads a softmax output
    of position 0's nll that position 0's loss does not reach: the cached order
    would leave that node out, and verifying mode says so."""
    E = CEngine()
    E.create_params({"w": (1, 1)}, np.array([0.5]))
    E.verify = True

    def fn(t):
        x, _, _ = (E._ok(lib.mg_leaf(E.s, c)) for c in (0.1, 0.7, -0.4))
        l0 = E.nll((x, 3), t[1])
        y2 = l0 - (6 * 3 + 3) + 4 * 3 + 2 + 2 * 2  # nll's softmax output 2 (docs/graph.md)
        return E.mean([l0, E.nll((y2, 2), t[2])])  # y2 and the node after it

    with pytest.raises(ValueError, match="checking: node"):
        E.backward(E.run(fn, [0, 0, 0], key=("doc_loss", "x"), doc=True))


def test_a_doc_graph_has_one_backward():
    E, tok, cfg = op_path(), Tokenizer(DOCS), Config()
    P = init_params(E, cfg, tok.vocab_size, random.Random(0))
    loss = doc_loss(E, P, cfg, tok.encode("emma"))
    E.backward(loss)
    with pytest.raises(ValueError, match="once per graph"):
        E.backward(loss)


def test_random_use_of_the_doc_path_matches_the_full_sort():
    """Random documents, verifying mode switched on and off between builds, and
    the tokens overwritten between forward and backward: every doc backward's
    parameter gradients equal those of the same graph built without replay
    (so by the full sort), bit for bit."""
    rng, tok, cfg = random.Random(3), Tokenizer(DOCS), Config(block_size=6)
    A, B = op_path(), op_path()
    PA, PB = (init_params(E, cfg, tok.vocab_size, random.Random(0)) for E in (A, B))
    docs = [d for d in DOCS[:400] if len(d) <= 7]
    for _ in range(300):
        tokens = tok.encode(rng.choice(docs))
        A.verify = rng.random() < 0.2
        A.reset()
        loss = doc_loss(A, PA, cfg, tokens)
        if rng.random() < 0.3:  # the graph is already built: new tokens change nothing in it
            A._ok(lib.mg_tokens(A.s, [rng.randrange(tok.vocab_size) for _ in tokens], len(tokens)))
        A.backward(loss)
        B.reset()
        B.backward(doc_loss(B, PB, cfg, tokens, replay=False))
        assert bits(A.param_grads()) == bits(B.param_grads())
        A.zero_grads()
        B.zero_grads()
    assert A.v.pieces > 0 and B.v.pieces == 0
