"""What a run tells and how it goes on: one stderr line per file written,
documents longer than the block counted, and a finished run extended with
--steps, two pieces equal to one, bit for bit."""
import pytest
from conftest import run_main
from test_hardening import one_line_error

from microgpt_c import Run

PROG = "python -m microgpt_c"
TINY = ["--n-embd", "8", "--n-head", "2", "--num-samples", "2"]


def losses(out):
    """(step, loss) of each loss line (the schedule's length, after the /, differs)."""
    return [(line.split()[1], line.split()[-1]) for line in out.splitlines() if line.startswith("step ")]


def test_a_run_extended_in_two_pieces_equals_one_extended_in_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run_main(*TINY, "--steps", 20, "--save", "a.npz")[0] == 0
    assert run_main(*TINY, "--steps", 20, "--save", "b.npz")[0] == 0
    status, out, err = run_main("--resume", "a.npz", "--steps", 30, "--save", "a.npz")
    assert status == 0 and err == f"{PROG}: wrote the checkpoint a.npz (step 30 of 30)\n"
    first = losses(out)
    status, out, err = run_main("--resume", "a.npz", "--steps", 45, "--save", "a.npz", "--num-samples", 3)
    two = first + losses(out)
    status, one, err = run_main("--resume", "b.npz", "--steps", 45, "--num-samples", 3)
    assert status == 0 and two == losses(one) and len(two) == 25
    assert [ln for ln in out.splitlines() if ln.startswith("sample")] == \
        [ln for ln in one.splitlines() if ln.startswith("sample")]


def test_the_extension_keeps_the_schedule_and_holds_its_last_rate():
    run = Run(steps=10)
    run.train()
    run.extend(25)
    assert run.schedule.decay_steps == 10 and run.steps == 25
    assert [run.adam.factors(k)[0] for k in (9, 10, 14, 24)] == [0.01 * (1 - i / 10) for i in (9, 0, 4, 4)]
    fresh = Run(steps=10)
    assert [fresh.adam.factors(k)[0] for k in range(10)] == [0.01 * (1 - k / 10) for k in range(10)]  # the reference's


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
