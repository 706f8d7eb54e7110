"""Run.attention and the attention command: the weights are the model's own
(trace's, bit for bit, and the ones the C engine's attention multiplies the
values by), each row a distribution over the positions so far; bad input is
one line and exit status 2, with nothing written."""
import os
import sys

import numpy as np
import pytest

from conftest import bits, run_main
from microgpt_c import Config, Run
from microgpt_c.cengine import CEngine
from microgpt_c.model import doc_loss, param_shapes
from microgpt_c.record import Recording
from microgpt_c.trace import trace

PROG = "python -m microgpt_c attention"
CFG = Config(n_layer=2, n_embd=12, n_head=3, block_size=10)
SEED = 3


def trained(steps):
    run = Run(CFG, seed=SEED, steps=10)
    for _ in range(steps):
        run.train_step()
    return run


def test_the_weights_are_traces():
    """trace's attn_weights at step 3 are the attention, after 2 steps, over
    step 3's document."""
    arrays = trace(trained(0), 3)
    run = trained(2)
    doc = run.docs[2]
    assert len(doc) < CFG.block_size  # the whole document is read: the same positions
    layers = run.attention(doc)
    assert len(layers) == CFG.n_layer
    for li, w in enumerate(layers):
        assert w.shape == (CFG.n_head, len(doc) + 1, len(doc) + 1)
        assert bits(w) == bits(arrays[f"layer{li}.attn_weights"].transpose(1, 0, 2))


def test_the_weights_are_what_the_c_engine_multiplies_the_values_by():
    """Each head's output in the C engine (exact mode) is, bit for bit, the
    reference's sum of weight times value, with these weights."""
    run, text = trained(4), "emily"
    E = type("CRecorder", (Recording, CEngine), {})()  # the C engine's ops, recorded by name
    P = E.create_params(param_shapes(CFG, run.tok.vocab_size), run.E.param_values())
    doc_loss(E, P, CFG, run.tok.encode(text), kernel=False)
    seen = E.seen
    hd = CFG.n_embd // CFG.n_head
    for li, w in enumerate(run.attention(text)):
        v, out = seen[f"layer{li}.v"], seen[f"layer{li}.attn_out"]
        for t in range(len(text) + 1):
            want = [sum(w[h, t, s] * v[s][h * hd + j] for s in range(t + 1)) for h in range(CFG.n_head)
                    for j in range(hd)]
            assert bits(out[t]) == bits(want)


def test_rows_are_distributions_over_the_past():
    for w in trained(5).attention("anna"):
        assert np.allclose(w.sum(axis=2), 1.0, rtol=0, atol=1e-12)
        T = w.shape[1]
        assert (w[:, np.triu_indices(T, 1)[0], np.triu_indices(T, 1)[1]] == 0).all()  # nothing after a position
        assert (w[:, np.arange(T), np.arange(T)] > 0).all() and (w[:, 0, 0] == 1).all()


@pytest.mark.parametrize("text, says", [("Zoe", "text has characters not in the vocabulary: 'Z'"),
                                        ("a" * 10, r"text must be shorter than block_size \(10\), not 10"),
                                        ("", "at least one character"), (5, "text must be a string")])
def test_bad_text(text, says):
    with pytest.raises(ValueError, match=says):
        trained(0).attention(text)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("attention") / "run.npz"
    trained(10).save(str(path))
    return path


def test_the_command_draws_one_map_per_layer_and_head(checkpoint, tmp_path):
    imread = pytest.importorskip("matplotlib.image").imread  # (without matplotlib: the test below)

    out = tmp_path / "attention.png"
    status, stdout, err = run_main("attention", "--load", checkpoint, "--text", "emma", "--out", out)
    assert (status, stdout) == (0, "")
    assert err == f"{PROG}: wrote the attention maps {out} (6 maps: 2 layers x 3 heads, 5 positions each)\n"
    png = imread(out)
    assert png.shape[0] > 300 and png.shape[1] > png.shape[0]  # three maps across, two down


def one_line(status, out, err):
    assert (status, out) == (2, ""), err
    assert err.count("\n") == 1 and err.startswith(f"{PROG}: error: "), err
    return err[len(f"{PROG}: error: "):-1]


@pytest.mark.parametrize("args, says", [
    (["--text", "Zoe"], "--text has characters not in the vocabulary: 'Z'"),
    (["--text", "a" * 12], "--text must be shorter than block_size (10), not 12 characters"),
    (["--text", ""], "--text must have at least one character"),
    (["--text", "ann", "--out", "{tmp}/a.jpg"], "--out writes a PNG: the file name must end in .png"),
    (["--text", "ann", "--out", "{ck}"], "is the file --load names: it would be overwritten"),
    (["--text", "ann", "--load", "{tmp}/none.npz"], "none.npz: No such file or directory"),
    (["--text", "ann", "--out", "{tmp}/no/such/dir/a.png"], "cannot write"),
    (["--out", "{tmp}/a.png"], "the following arguments are required: --text"),
])
def test_bad_input_is_one_line(checkpoint, tmp_path, args, says):
    args = [a.format(tmp=tmp_path, ck=checkpoint) for a in args]
    defaults = {"--load": str(checkpoint), "--out": str(tmp_path / "a.png")}
    argv = ["attention"] + [x for k, v in defaults.items() if k not in args for x in (k, v)] + args
    before = checkpoint.read_bytes()
    assert says in one_line(*run_main(*argv))
    assert os.listdir(tmp_path) == [] and checkpoint.read_bytes() == before


def test_without_matplotlib_says_how_to_get_it(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    msg = one_line(*run_main("attention", "--load", checkpoint, "--text", "ann", "--out", tmp_path / "a.png"))
    assert msg == "--out needs matplotlib: pip install '.[plot]' from a checkout, or pip install matplotlib"
    assert os.listdir(tmp_path) == []
