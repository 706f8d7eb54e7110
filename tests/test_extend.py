"""What a run tells and how it goes on: one stderr line per file written,
documents longer than the block counted, and a finished run extended with
--steps as a fresh run of that length would go on (and exactly as it was when
resumed without new flags)."""
import pytest
from conftest import PROG, one_line_error, run_main

from microgpt_c import Config, Run, load_docs
from microgpt_c.text import data_path

TINY = ["--n-embd", "8", "--n-head", "2", "--num-samples", "2"]


def losses(out):
    """(step, loss) of each loss line (the schedule's length, after the /, differs)."""
    return [(line.split()[1], line.split()[-1]) for line in out.splitlines() if line.startswith("step ")]


def test_an_extended_run_goes_on_at_a_fresh_long_runs_rate():
    run = Run(steps=10)
    run.train()
    run.extend(25)
    fresh = Run(steps=25)
    assert run.schedule == fresh.schedule  # the decay over all the steps is planned again over the new length
    assert [run.adam.factors(k) for k in range(10, 25)] == [fresh.adam.factors(k) for k in range(10, 25)]
    assert [Run(steps=10).adam.factors(k)[0] for k in range(10)] == [0.01 * (1 - k / 10) for k in range(10)]
    run.extend(40, decay_steps=10)  # a decay's length given: past it, the rate starts again from lr
    assert [run.adam.factors(k)[0] for k in (25, 30, 34)] == [0.01 * (1 - i / 10) for i in (5, 0, 4)]


def test_an_extended_run_ends_about_where_a_fresh_long_run_does():
    """On prose, 100 -> 500 steps: the held-out loss within 0.5% of a fresh
    500-step run's; the warm restart every 100 steps that extending did
    before ends more than 1% above it."""
    docs, cfg = load_docs(data_path("austen")), Config(n_embd=16, block_size=16)

    def held_out(first, **extension):
        run = Run(cfg, docs, steps=first, val_docs=100, mode="fast")
        run.train()
        if extension:
            run.extend(**extension)
            run.train()
        return run.val_loss()

    fresh = held_out(500)
    assert abs(held_out(100, steps=500) / fresh - 1) < 0.005
    assert held_out(100, steps=500, decay_steps=100) / fresh - 1 > 0.01


def test_an_extension_stopped_and_resumed_is_exact(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main(*TINY, "--steps", 20, "--save", "a.npz")[0] == 0
    status, one, err = run_main("--resume", "a.npz", "--steps", 45, "--num-samples", 3)
    run = Run.load("a.npz")
    run.extend(45)
    for _ in range(10):
        run.train_step()
    run.save("b.npz")  # stopped at step 30 of the extension: resumed without flags, it goes on as it was
    status, out, err = run_main("--resume", "b.npz", "--num-samples", 3)
    assert status == 0 and losses(out) == losses(one)[10:] and len(losses(out)) == 15
    assert [ln for ln in out.splitlines() if ln.startswith("sample")] == \
        [ln for ln in one.splitlines() if ln.startswith("sample")]
    status, out, err = run_main("--resume", "b.npz", "--decay-steps", 0, "--num-samples", 3)  # the same decay
    assert status == 0 and losses(out) == losses(one)[10:]


def test_resume_takes_a_decay_length(tmp_path, capsys):
    ck = tmp_path / "ck.npz"
    Run(steps=5).save(ck)
    msg = one_line_error(*run_main("--resume", ck, "--decay-steps", -1))
    assert msg == "--decay-steps must be 0 or more, not -1"
    msg = one_line_error(*run_main("--resume", ck, "--lr", 0.1))
    assert msg == ("--resume continues the checkpoint's run with its own settings: --lr cannot be given with it "
                   "(only --steps and --decay-steps, to train on)")
    status, out, err = run_main("--resume", ck, "--decay-steps", 2, "--num-samples", 0, "--save", ck)
    assert status == 0 and Run.load(ck).schedule.decay_steps == 2


def test_a_finished_run_says_how_to_go_on(tmp_path, capsys):
    ck = tmp_path / "done.npz"
    run = Run(steps=3)
    run.train()
    run.save(ck)
    msg = one_line_error(*run_main("--resume", ck))
    assert msg == f"{ck} is a finished run (step 3 of 3): to train on, give --steps N with N above 3"
    msg = one_line_error(*run_main("--resume", ck, "--steps", 2))
    assert msg == "--steps must be more than the 3 done, not 2"


def test_every_file_written_is_named_on_stderr(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(*TINY, "--steps", 6, "--save", "ck.npz", "--save-every", 2)
    assert status == 0 and err == f"{PROG}: wrote the checkpoint ck.npz (step 6 of 6)\n"
    pytest.importorskip("matplotlib")
    status, out, err = run_main(*TINY, "--steps", 3, "--plot", "loss.png")
    assert status == 0 and err == f"{PROG}: wrote the loss plot loss.png\n" and (tmp_path / "loss.png").exists()


def test_documents_longer_than_the_block_are_counted_on_stderr(tmp_path, capsys):
    data = tmp_path / "prose.txt"
    data.write_text("a line of prose longer than the block\nshort\nexactly8\n")
    status, out, err = run_main("--data", data, "--block-size", 8, "--steps", 1, *TINY)
    assert status == 0 and out.startswith("num docs: 3\n")
    assert err == f"{PROG}: 2 of 3 documents have 8 characters or more (--block-size): training reads their " \
                  "first 8 only\n"
    status, out, err = run_main("--steps", 1, *TINY)
    assert err == ""  # the names fit the default block
