"""The Python API: README.md's example runs as written; train, sample (with a
prefix), save and load from Python, on either engine; states checked as
strictly as checkpoints; a run that cannot fit refused before it allocates."""
import os
import re

import numpy as np
import pytest
from conftest import DOCS, TINY, one_line_error, run_main

from microgpt_c import Run

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def python_api_example(path):
    """The first ```python block under a heading that mentions "Python API"."""
    heading, fence, code = "", None, []
    with open(path, encoding="utf-8") as f:
        for line in f.read().splitlines():
            if fence is not None:  # inside a fenced block, where "#" starts a comment, not a heading
                if line.strip() == "```":
                    if fence == "```python" and "Python API" in heading:
                        return "\n".join(code)
                    fence = None
                else:
                    code.append(line)
            elif line.startswith("```"):
                fence, code = line.strip(), []
            elif line.startswith("#"):
                heading = line
    return None


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    code = python_api_example(README)
    assert code, "README.md has no ```python block under a heading that says 'Python API'"
    monkeypatch.chdir(tmp_path)  # it may write files
    exec(compile(code, "README.md's Python API example", "exec"), {"__name__": "__readme__"})
    assert capsys.readouterr().out.strip()  # it shows what it did


def test_train_runs_to_the_end_of_the_schedule():
    run = Run(TINY, DOCS, steps=7)
    seen = []
    losses = run.train(on_step=lambda step, loss: seen.append((step, loss)))
    assert seen == list(zip(range(1, 8), losses)) and run.step == 7
    assert run.train() == []  # nothing left to train
    again = Run(TINY, DOCS, steps=7)
    assert [again.train_step() for _ in range(7)] == losses


def test_a_prefix_is_continued_as_the_model_would():
    """Nearly greedy sampling (a tiny temperature): a name, given any start of
    itself as the prefix, comes out whole again. The prefix's characters go
    through the model as if it had drawn them."""
    run = Run(steps=60, mode="fast")
    run.train()
    greedy = run.sample(1, temperature=1e-4)[0]
    assert len(greedy) >= 3
    for k in range(1, len(greedy)):
        assert run.sample(2, temperature=1e-4, prefix=greedy[:k]) == [greedy, greedy]


def test_prefix_samples_start_with_it_and_fit_the_block():
    runs = [Run(TINY, DOCS, seed=1, steps=5, engine=e) for e in ("c", "python")]
    for run in runs:
        run.train()
    names = [run.sample(12, temperature=1.0, prefix="ka") for run in runs]
    assert names[0] == names[1]  # the engines agree on prefixed samples too
    assert all(n.startswith("ka") and len(n) <= TINY.block_size for n in names[0])
    longest = runs[0].sample(5, temperature=1.0, prefix="abcde")  # block_size - 1 characters
    assert all(n.startswith("abcde") and len(n) <= 6 for n in longest)


def test_bad_prefix_is_a_clear_error():
    run = Run(TINY, DOCS, steps=1)
    with pytest.raises(ValueError, match=r"not in the vocabulary: '\\n', '1', 'Q'$"):
        run.sample(1, prefix="aQ1\n")
    with pytest.raises(ValueError, match=r"shorter than block_size \(6\), not 6 characters"):
        run.sample(1, prefix="abcdef")


def test_a_model_that_cannot_fit_is_refused_before_allocating(capsys, monkeypatch):
    import microgpt_c.run  # noqa: F401
    allocated = []
    monkeypatch.setattr(microgpt_c.run, "init_params", lambda *a: allocated.append("params"))
    monkeypatch.setattr(microgpt_c.run, "Adam", lambda *a: allocated.append("moments"))
    msg = one_line_error(*run_main("--n-embd", 2**20, "--steps", 1))
    assert re.fullmatch(r"the run needs (about [\d,.]+ [KMGTP]iB|[\d,]+ nodes) \(13,194,\d{3},\d{3},\d{3} parameters "
                        r"with Adam's moments, [\d,]+ numbers for a step of 16 positions\), more than the .+", msg), msg
    with pytest.raises(MemoryError, match="the run needs"):  # the Python API: before anything is allocated too
        Run(microgpt_c.Config(n_embd=2**20), steps=1)
    assert allocated == []


def test_the_estimate_is_the_documented_node_count():
    """memory.GRAPHS counts the reference's graph, as the C engine's ops build
    it (and the pure-Python engine)."""
    from microgpt_c import Config
    from microgpt_c.memory import GRAPHS
    from microgpt_c.model import doc_loss
    cfg = Config(n_layer=2, n_embd=8, n_head=2, block_size=6)
    docs = ["abcdefghij", "ab"]
    for mode in ["exact", "fast"]:  # fast mode's ops outside the kernel are exact mode's
        run = Run(cfg, docs, steps=4, mode=mode)
        for i in range(4):
            run.E.reset()
            tokens = run.tok.encode(run.docs[i % 2])
            doc_loss(run.E, run.P, cfg, tokens, kernel=False)  # the op path: every node
            P = min(cfg.block_size, len(tokens) - 1)
            assert run.E.nodes() == GRAPHS["exact"](8, run.tok.vocab_size, 2, 2, P)


def test_the_kernels_estimate_bounds_what_they_hold():
    """memory.kernel_doubles is at least what the whole-document kernels
    allocate (read back from the C side) for odd shapes."""
    from microgpt_c.memory import kernel_doubles
    from microgpt_c import Config, Tokenizer
    from microgpt_c.cengine import CEngine, lib
    from microgpt_c.model import doc_loss, init_params
    import random
    for cfg in (Config(), Config(n_layer=3, n_embd=12, n_head=3, block_size=9), Config(n_layer=0, n_embd=40)):
        E, tok = CEngine(), Tokenizer(["abcdefghijklmnopqrstuvwxyz" * 3])
        P = init_params(E, cfg, tok.vocab_size, random.Random(0))
        tokens = tok.encode("abcdefghijklmnopqrstuvwxyz" * 3)
        E.backward(doc_loss(E, P, cfg, tokens))
        n = min(cfg.block_size, len(tokens) - 1)
        assert lib.mg_doc_doubles(E.doc) <= kernel_doubles(cfg.n_embd, tok.vocab_size, cfg.n_layer, cfg.n_head, n)


def test_from_state_checks_as_strictly_as_a_checkpoint():
    good = Run(steps=2).state()
    n = len(good["params"])
    for change, says in ((dict(m=good["m"][:-1]), "'adam.m' has shape"), (dict(v=list(good["v"]) + [0.0]), "'adam.v'"),
                         (dict(params=good["params"][:-1]), "'params' has shape"),
                         (dict(params=np.append(good["params"], 1.0)), "'params' has shape"),
                         (dict(v=-np.ones(n)), "negative"), (dict(params=np.full(n, np.nan)), "non-finite"),
                         (dict(step=3), "'step'"), (dict(docs=["", "ab"]), "non-empty string"),
                         (dict(rng=(3, (1, 2), None)), "'rng'"), (dict(mode="turbo"), "'mode'")):
        with pytest.raises(ValueError, match=says):
            Run.from_state({**good, **change})
    assert Run.from_state(good).state()["step"] == 0


def test_samples_stream_as_they_are_made():
    run = Run(steps=1)
    names = run.samples(10**9)
    first = [next(names) for _ in range(3)]
    assert len(first) == 3 and all(isinstance(n, str) for n in first)
