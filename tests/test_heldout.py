"""Held-out documents (--val-docs, Run(val_docs=N)): the split, kept by
checkpoints; their loss, the same on every engine and changing nothing in the
run; the CLI's lines and its errors; the packaged prose the README shows them on."""
import pytest
from conftest import DOCS, TINY, bits, one_line_error, run_main

from microgpt_c import Config, Run, Schedule
from microgpt_c.model import doc_loss

FEW = DOCS[:300]


def test_the_split_is_the_shuffles_last_documents_reproducibly():
    a, b, whole = Run(TINY, FEW, val_docs=40), Run(TINY, FEW, val_docs=40), Run(TINY, FEW)
    assert len(a.held_out) == 40 and len(a.docs) == 260
    assert (a.docs, a.held_out) == (b.docs, b.held_out)
    assert a.docs + a.held_out == whole.docs  # the reference's shuffle, cut before its last 40
    assert not set(a.docs) & set(a.held_out) or len(set(FEW)) < len(FEW)  # disjoint as positions are
    assert Run(TINY, FEW, seed=7, val_docs=40).held_out != a.held_out  # the seed chooses them
    assert a.tok.chars == whole.tok.chars and bits(a.E.param_values()) == bits(whole.E.param_values())


def test_a_checkpoint_keeps_the_split_and_resuming_is_exact(tmp_path):
    ck = tmp_path / "run.npz"
    straight = Run(TINY, FEW, steps=12, val_docs=30, mode="fast")
    losses = straight.train()
    half = Run(TINY, FEW, steps=12, val_docs=30, mode="fast")
    for _ in range(5):
        half.train_step()
    half.save(ck)
    again = Run.load(ck)
    assert (again.docs, again.held_out, again.schedule.val_docs) == (half.docs, half.held_out, 30)
    assert bits(again.val_loss()) == bits(half.val_loss())
    assert again.train() == losses[5:] and bits(again.val_loss()) == bits(straight.val_loss())
    assert again.sample(3) == straight.sample(3)  # the vocabulary is every document's, as before


def test_evaluating_changes_nothing_in_the_run():
    for mode in ("exact", "fast"):
        plain, watched = (Run(TINY, FEW, steps=8, val_docs=20, mode=mode) for _ in range(2))
        losses = []
        while watched.step < watched.steps:
            watched.val_loss()
            losses.append(watched.train_step())
        assert losses == plain.train() and bits(watched.E.param_values()) == bits(plain.E.param_values())
        assert watched.sample(3) == plain.sample(3)


def test_the_held_out_loss_is_equal_on_every_engine_and_is_the_training_loss_of_those_documents():
    run = Run(Config(n_layer=2, n_embd=8, n_head=2, block_size=10), FEW, steps=6, val_docs=7)
    run.train()
    state = run.state()
    values = {(e, m): Run.from_state(state, e, m).val_loss() for e, m in (("c", "exact"), ("c", "fast"),
                                                                            ("python", "exact"))}
    assert len(set(map(bits, values.values()))) == 1, values
    E = run.E  # each document's loss node as a training step builds it, averaged the same way
    nodes = [doc_loss(E, run.P, run.cfg, run._tokens(doc), kernel=False) for doc in run.held_out]
    assert bits(sum(map(E.value, nodes)) / len(nodes)) == bits(values["c", "exact"])


def test_the_held_out_loss_needs_held_out_documents_and_enough_left_to_train():
    with pytest.raises(ValueError, match="holds no documents out"):
        Run(TINY, FEW).val_loss()
    with pytest.raises(ValueError, match="val_docs must be less than the 300 documents"):
        Run(TINY, FEW, val_docs=300)
    with pytest.raises(ValueError, match="val_docs must be 0 or more"):
        Run(TINY, FEW, val_docs=-1)
    state = Run(TINY, FEW, steps=5, val_docs=3).state()
    state["schedule"] = Schedule(steps=5, val_docs=300)  # a state that holds every document out
    with pytest.raises(ValueError, match="val_docs must be less than the 300 documents"):
        Run.from_state(state)


def test_the_cli_reports_the_held_out_loss_on_each_line_and_at_the_end(tmp_path):
    data = tmp_path / "few.txt"
    data.write_text("\n".join(FEW) + "\n")
    args = ("--data", data, "--n-embd", 8, "--n-head", 2, "--block-size", 6, "--steps", 250, "--num-samples", 2)
    status, out, err = run_main(*args, "--val-docs", 15)
    lines = out.splitlines()
    assert status == 0 and lines[0] == "num docs: 285 (and 15 held out)"
    steps = [ln for ln in lines if ln.startswith("step ")]  # every 10 steps a held-out document: 150
    assert [ln.split()[1] for ln in steps] == ["150", "250"] and all("| held-out loss " in ln for ln in steps)
    run = Run(Config(n_embd=8, n_head=2, block_size=6), FEW, steps=250, val_docs=15)
    run.train()
    final = f"{run.val_loss():.4f}"
    assert steps[-1].endswith(final) and any(ln.startswith(f"held-out loss: {final} (evaluating took ") for ln in lines)
    status, plain, err = run_main(*args, "--log-every", 50)  # without the flag: no held-out loss anywhere
    assert status == 0 and "held-out" not in plain and plain.startswith("num docs: 300\n")


@pytest.mark.parametrize("value, message", [
    ("-1", "--val-docs must be 0 or more, not -1"),
    ("32033", "--val-docs must be less than the 32033 documents (training needs one), not 32033"),
    ("1e3", "argument --val-docs: invalid int value: '1e3'"),
])
def test_a_bad_val_docs_is_one_line(value, message, capsys):
    assert one_line_error(*run_main("--val-docs", value)) == message


def test_resume_keeps_the_checkpoints_split(tmp_path):
    ck = tmp_path / "run.npz"
    Run(TINY, FEW, steps=3, val_docs=10).save(ck)
    msg = one_line_error(*run_main("--resume", ck, "--val-docs", 5))
    assert msg.startswith("--resume continues the checkpoint's run with its own settings: --val-docs cannot")
    status, out, err = run_main("--resume", ck, "--num-samples", 1)
    assert status == 0 and out.startswith("num docs: 290 (and 10 held out)\n") and "| held-out loss " in out


def test_the_readmes_own_text_example_runs_and_starts_as_shown(capsys):
    """The command of README.md's "Train on your own text", shortened to 100
    steps: its first lines, on stdout and stderr, are the ones shown."""
    import os
    import shlex

    with open(os.path.join(os.path.dirname(__file__), "..", "README.md")) as f:
        readme = f.read()
    section = readme[readme.index("## Train on your own text"):readme.index("## Checkpoints")]
    command = next(ln.strip() for ln in section.splitlines() if ln.strip().startswith("python -m microgpt_c --data"))
    args = shlex.split(command)[3:]
    args[args.index("--steps") + 1] = "100"
    status, out, err = run_main(*args)
    shown = section[section.index("printed, as run"):].split("\n\n")[1].splitlines()
    shown = [ln.strip() for ln in shown]
    assert status == 0 and err.splitlines() == shown[:1] and out.splitlines()[:3] == shown[1:4]
    assert out.count("sample ") == 5 and "held-out loss: " in out


@pytest.mark.parametrize("command", [["bench", "--engines", "c:exact"], ["trace", "--step", "1", "--out", "t.npz"]])
def test_the_other_commands_refuse_a_bad_val_docs_in_one_line(command, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    msg = one_line_error(*run_main(*command, "--val-docs", 32033), prog=f"python -m microgpt_c {command[0]}")
    assert msg == "--val-docs must be less than the 32033 documents (training needs one), not 32033"


def test_data_takes_a_packaged_texts_name_or_a_path(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "austen").write_text("abc\ndef\n")
    assert run_main("--data", "./austen", "--steps", 1, "--num-samples", 0)[1].startswith("num docs: 2\n")
    status, out, err = run_main("--data", "austen", "--steps", 1, "--num-samples", 0, "--block-size", 80)
    assert status == 0 and out.startswith("num docs: 10721\nvocab size: 75\n") and err == ""
    assert run_main("--data", "names", "--steps", 1, "--num-samples", 0)[1].startswith("num docs: 32033\n")


def test_a_held_out_loss_that_cannot_be_computed_is_one_line(monkeypatch, capsys):
    def overflow(run):
        raise ArithmeticError("mg_doc_forward: a non-finite value")

    monkeypatch.setattr(Run, "val_loss", overflow)
    status, out, err = run_main("--val-docs", 5, "--steps", 3, "--log-every", 2)
    assert status == 2 and err == "python -m microgpt_c: error: cannot compute the held-out loss after step 2: " \
                                  "mg_doc_forward: a non-finite value\n"
