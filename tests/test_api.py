"""The Python API: README.md's example runs as written; train, sample (with a
prefix), save and load from Python, on either engine."""
import os

import pytest

from conftest import DOCS, TINY
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
