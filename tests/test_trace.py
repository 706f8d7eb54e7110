"""python -m microgpt_c trace: its numbers agree with independent
computations of the same step: the pure-Python engine's (a run of its own,
bit for bit) and, if PyTorch is installed, the model written once more in
PyTorch over the whole document at once (to 1e-12 relative)."""
import numpy as np
import pytest

from conftest import bits
from microgpt_c import Config, Run, load_docs
from microgpt_c.__main__ import main
from microgpt_c.model import doc_loss, param_shapes

TWO_LAYERS = {"n_layer": 2, "n_embd": 12, "n_head": 3, "block_size": 10}
SEED = 3


def flags(cfg, seed):
    return [*(f"--{k.replace('_', '-')}={v}" for k, v in cfg.items()), f"--seed={seed}"]


def trace(tmp_path, capsys, step, cfg, seed):
    """The arrays trace writes for step of the run with these settings."""
    out = tmp_path / "trace.npz"
    main(["trace", "--step", str(step), "--out", str(out), *flags(cfg, seed)])
    assert capsys.readouterr().out.startswith(f"wrote {out}: step {step}")
    with np.load(out) as f:
        return dict(f)


@pytest.mark.parametrize("step", [1, 3])
@pytest.mark.parametrize("cfg, seed", [({}, 42), (TWO_LAYERS, SEED), ({"block_size": 3}, 5)])  # last: docs cut
def test_trace_equals_the_pure_python_engine(tmp_path, capsys, step, cfg, seed):
    """A pure-Python run of its own, trained step - 1 steps: step's loss,
    parameters and gradients, bit for bit."""
    t = trace(tmp_path, capsys, step, cfg, seed)
    run = Run(Config(**cfg), seed=seed, engine="python")
    for _ in range(step - 1):
        run.train_step()
    params = run.E.param_values()
    tokens = run.tok.encode(run.docs[step - 1][:run.cfg.block_size])
    loss = doc_loss(run.E, run.P, run.cfg, tokens)
    run.E.backward(loss)
    shapes = param_shapes(run.cfg, run.tok.vocab_size)
    assert bits(t["loss"]) == bits(run.E.value(loss)) and t["loss"].shape == ()
    npos = min(run.cfg.block_size, len(tokens) - 1)
    assert t["tokens"].tolist() == tokens[:npos + 1]
    assert bits(np.concatenate([t[name].ravel() for name in shapes])) == bits(params)
    assert bits(np.concatenate([t[name + ".grad"].ravel() for name in shapes])) == bits(run.E.param_grads())
    assert t["logits"].shape == t["probs"].shape == (npos, run.tok.vocab_size)
    for li in range(run.cfg.n_layer):
        assert t[f"layer{li}.attn_weights"].shape == (npos, run.cfg.n_head, npos)
        assert t[f"layer{li}.mlp_hidden"].shape == (npos, 4 * run.cfg.n_embd)


def test_trace_equals_pytorch(tmp_path, capsys):
    """The same model in PyTorch, nanoGPT style (float64, every position at
    once under a causal mask), from the trace's parameters: the loss, every
    gradient and every intermediate to 1e-12 of the tensor's largest value."""
    torch = pytest.importorskip("torch")
    cfg = Config(**TWO_LAYERS)
    t = trace(tmp_path, capsys, 3, TWO_LAYERS, SEED)
    shapes = param_shapes(cfg, len(set("".join(load_docs()))) + 1)
    P = {name: torch.tensor(t[name], requires_grad=True) for name in shapes}
    tokens = torch.tensor(t["tokens"])
    inputs, targets = tokens[:-1], tokens[1:]
    n, hd = len(inputs), cfg.n_embd // cfg.n_head
    seen = {}

    def rmsnorm(x):
        return x * (x.pow(2).mean(-1, keepdim=True) + 1e-5) ** -0.5

    x = seen["x.embed"] = P["wte"][inputs] + P["wpe"][:n]
    x = seen["x.norm0"] = rmsnorm(x)
    causal = torch.tril(torch.ones(n, n, dtype=torch.bool))
    for li in range(cfg.n_layer):
        L = f"layer{li}."
        x_residual = x
        x = seen[L + "norm_attn"] = rmsnorm(x)
        q = seen[L + "q"] = x @ P[L + "attn_wq"].T
        k = seen[L + "k"] = x @ P[L + "attn_wk"].T
        v = seen[L + "v"] = x @ P[L + "attn_wv"].T
        q, k, v = (m.view(n, cfg.n_head, hd).transpose(0, 1) for m in (q, k, v))  # (head, position, hd)
        att = (q @ k.transpose(1, 2)) / hd**0.5
        att = torch.softmax(att.masked_fill(~causal, float("-inf")), dim=-1)
        seen[L + "attn_weights"] = att.transpose(0, 1)  # (position, head, position)
        x = seen[L + "attn_out"] = (att @ v).transpose(0, 1).reshape(n, cfg.n_embd)
        x = seen[L + "attn_proj"] = x @ P[L + "attn_wo"].T
        x = seen[L + "resid_attn"] = x + x_residual
        x_residual = x
        x = seen[L + "norm_mlp"] = rmsnorm(x)
        x = seen[L + "mlp_hidden"] = torch.relu(x @ P[L + "mlp_fc1"].T)
        x = seen[L + "mlp_out"] = x @ P[L + "mlp_fc2"].T
        x = seen[L + "resid_mlp"] = x + x_residual
    logits = seen["logits"] = x @ P["lm_head"].T
    seen["probs"] = torch.softmax(logits, dim=-1)
    loss = torch.nn.functional.cross_entropy(logits, targets)
    loss.backward()

    def close(ours, theirs):
        theirs = theirs.detach().numpy()
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() <= 1e-12 * np.abs(theirs).max()

    close(t["loss"], loss)
    assert set(seen) | {"loss", "tokens"} | set(shapes) | {name + ".grad" for name in shapes} == set(t)
    for name, tensor in seen.items():
        close(t[name], tensor)
    for name in shapes:
        close(t[name + ".grad"], P[name].grad)


def test_a_loss_not_the_c_engines_writes_nothing(tmp_path, monkeypatch):
    """The trace's pure-Python step is checked against the C engine's loss:
    rmsnorm's scale as 1 / sqrt (a last-bit difference) is refused."""
    import microgpt_c.record

    def rmsnorm(self, x):
        ms = sum(xi * xi for xi in x) / len(x)
        scale = 1 / (ms + 1e-5) ** 0.5
        return [xi * scale for xi in x]

    monkeypatch.setattr(microgpt_c.record.Recorder, "rmsnorm", rmsnorm)
    out = tmp_path / "trace.npz"
    with pytest.raises(RuntimeError, match="not the C engine's"):
        main(["trace", "--step", "1", "--out", str(out)])
    assert not out.exists()


@pytest.mark.parametrize("args", [["--step", "0"], ["--step", "21"], ["--step", "1", "--n-head", "5"],
                                  ["--step", "1", "--out", "/no/such/dir/t.npz"]])
def test_bad_input(tmp_path, capsys, args):
    argv = ["trace", "--steps", "20", *args]
    if "--out" not in args:
        argv += ["--out", str(tmp_path / "t.npz")]
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []
