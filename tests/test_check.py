"""python -m microgpt_c check: the reference's own output is bit-exact, a
changed or foreign one is named where it first differs, and what is not a
run is one line and exit status 2."""
import math
import os

import pytest
from conftest import run_main

from microgpt_c import Run

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "microgpt_seed42.txt")


def check(capsys, *args):
    """(exit status, report lines) of a check that reads a run."""
    status, out, err = run_main("check", *args)
    assert err == "" and status in (0, 1), err
    return status, out.splitlines()


def line(report, start):
    return next(ln for ln in report if ln.startswith(start))


def changed_digit(text, step):
    """text with the last digit of step's loss line changed by one."""
    lines = text.split("\n")
    i = next(i for i, ln in enumerate(lines) if ln.startswith(f"step {step:4d} /"))
    d = int(lines[i][-1])
    lines[i] = lines[i][:-1] + str(d + 1 if d < 9 else d - 1)
    return "\n".join(lines)


def test_golden_output_is_equal_to_the_printed_digits(capsys):
    """The reference's own output, with its 4 decimals: equal, and the verdict
    says to what (the largest difference is the rounding, and says so)."""
    status, report = check(capsys, GOLDEN)
    assert status == 0
    assert "loss lines equal: 1000 / 1000" in report and "names equal: 20 / 20" in report
    assert "header lines equal: 3 / 3" in report
    assert line(report, "verdict").startswith("verdict: equal to the printed digits: every printed line equal, "
                                              "losses to 4 decimals")
    assert line(report, "largest loss difference").endswith("an equal line: the rounding of its printed digits)")


def test_one_loss_digit_changed_names_its_step(capsys, tmp_path):
    path = tmp_path / "out.txt"
    path.write_text(changed_digit(open(GOLDEN).read(), 17))
    status, report = check(capsys, str(path))
    assert status == 1
    assert "loss lines equal: 999 / 1000" in report and "names equal: 20 / 20" in report
    assert line(report, "first difference").startswith("first difference: step 17: ")
    assert "up to step 16, differs from step 17" in line(report, "verdict")
    # a tolerance of one printed digit accepts it; of less, not
    status, report = check(capsys, str(path), "--tolerance", "0.0002")
    assert status == 0 and "equal within --tolerance 0.0002: 1 loss lines" in line(report, "verdict")
    assert check(capsys, str(path), "--tolerance", "0.00001")[0] == 1


def test_carriage_returns_and_other_lines(capsys, tmp_path):
    """Loss lines overwritten with \\r, spacing of its own, timings: the same run."""
    text = open(GOLDEN).read()
    text = text.replace(" / 1000 | loss", "/1000 |  loss").replace("\nstep", "\rstep").replace("sample ", "sample  ")
    path = tmp_path / "out.txt"
    path.write_text("starting\n" + text.replace("num params", "took 3s\nnum params"))
    status, report = check(capsys, str(path))
    assert status == 0 and "loss lines equal: 1000 / 1000" in report and "names equal: 20 / 20" in report


def test_own_random_generator_differs_from_step_1(capsys, tmp_path):
    """The main job's output with another seed stands for a port with its own
    random generator: every loss differs, from the first."""
    status, out, _ = run_main("--seed", "7", "--steps", "20")
    assert status == 0
    path = tmp_path / "out.txt"
    path.write_text(out)
    status, report = check(capsys, str(path), "--steps", "20")
    assert status == 1
    assert line(report, "first difference").startswith("first difference: step 1: ")
    assert "differs from the first printed step (1)" in line(report, "verdict")


def test_steps_differ_suggests_the_flag(capsys, tmp_path):
    status, out, _ = run_main("--steps", "20")
    path = tmp_path / "out.txt"
    path.write_text(out)
    status, report = check(capsys, str(path))  # the default --steps 1000
    assert status == 1 and "check with --steps 20" in line(report, "note")
    assert check(capsys, str(path), "--steps", "20")[0] == 0


def test_other_flags_and_data(capsys, tmp_path):
    """With other settings and documents, check compares with the reference
    for those: the main job's own output is bit-exact under the same flags."""
    data = tmp_path / "docs.txt"
    data.write_text("ada\nbob\ncyril\ndora\neve\nfelix\n")
    flags = ["--seed", "7", "--steps", "20", "--n-embd", "8", "--n-head", "2", "--data", str(data)]
    status, out, _ = run_main(*flags, "--num-samples", "5", "--temperature", "0.8")
    assert status == 0
    path = tmp_path / "out.txt"
    path.write_text(out)
    status, report = check(capsys, str(path), *flags, "--temperature", "0.8")
    assert status == 0, report
    assert "loss lines equal: 20 / 20" in report and "names equal: 5 / 5" in report
    # the default temperature draws other names (or, by chance, the same: then only the names line is checked)
    status, report = check(capsys, str(path), *flags)
    assert "loss lines equal: 20 / 20" in report
    assert status == (0 if "names equal: 5 / 5" in report else 1)


@pytest.mark.parametrize("content, message", [("root:x:0:0:root:/root:/bin/bash\n", "holds no run"),
                                              ("", "holds no run"), ("num docs: 3\nvocab size: 4\n", "holds no run"),
                                              ("sample 1000000000: anna\n", "at most")])
def test_not_a_run_main(tmp_path, content, message):
    path = tmp_path / "out.txt"
    path.write_text(content)
    status, out, err = run_main("check", str(path))
    assert status == 2 and out == "" and len(err.splitlines()) == 1 and message in err, err


def test_more_decimals_and_foreign_lines(capsys, tmp_path):
    """A loss printed to 6 decimals is compared to 6; a step past the schedule,
    a sample 0 and an unparsable loss differ."""
    path = tmp_path / "out.txt"
    losses = Run(steps=5).train()
    six = "".join(f"step {k} / 5 | loss {x:.6f}\n" for k, x in enumerate(losses, 1))
    path.write_text(six)
    status, report = check(capsys, str(path), "--steps", "5")
    assert status == 0 and "loss lines equal: 5 / 5" in report
    path.write_text(six.replace(f"{losses[2]:.6f}", f"{losses[2] + 2e-6:.6f}"))  # equal to 4 decimals, not 6
    status, report = check(capsys, str(path), "--steps", "5")
    assert status == 1 and line(report, "first difference").startswith("first difference: step 3: ")
    for extra, where in (("step 6 / 5 | loss 1.0\n", "step 6"), ("sample 0: anna\n", "sample 0"),
                         ("step 5 / 5 | loss nan\n", "step 5")):
        path.write_text(six + extra)
        status, report = check(capsys, str(path), "--steps", "5")
        assert status == 1 and line(report, "first difference").startswith(f"first difference: {where}: "), report


@pytest.mark.parametrize("what", ["missing", "directory", "device"])
def test_unreadable(capsys, tmp_path, what):
    path = "/dev/null" if what == "device" else tmp_path / "out.txt"
    if what == "directory":
        path.mkdir()
    status, out, err = run_main("check", str(path))
    assert status == 2 and out == "" and len(err.splitlines()) == 1, err
    assert ("No such file" if what == "missing" else "not a regular file or a pipe") in err, err


def test_too_big(capsys, tmp_path, monkeypatch):
    import microgpt_c.check
    monkeypatch.setattr(microgpt_c.check, "MAX_BYTES", 1000)
    status, out, err = run_main("check", GOLDEN)
    assert status == 2 and out == "" and len(err.splitlines()) == 1 and "larger than the 1,000 bytes" in err


@pytest.mark.parametrize("flags", [["--tolerance", "-1"], ["--tolerance", "nan"], ["--temperature", "0"],
                                   ["--n-head", "5"]])
def test_bad_flags(capsys, flags):
    status, out, err = run_main("check", GOLDEN, *flags)
    assert status == 2 and out == "" and len(err.splitlines()) == 1, err


# -- no false pass: a number is what it printed, and the verdict says to what it is equal --

def golden_with(tmp_path, old, new, prefix=b""):
    path = tmp_path / "out.txt"
    text = open(GOLDEN, encoding="utf-8").read()
    assert old in text
    path.write_bytes(prefix + text.replace(old, new, 1).encode())
    return str(path)


@pytest.mark.parametrize("old, new, first", [
    ("loss 3.3660", "loss 3,9999", "step 1: theirs '3,9999'"),  # a decimal comma is not 3
    ("num docs: 32033", "num docs: 32034", "num docs: theirs 32034"),  # after a byte order mark
])
def test_what_is_not_the_number_printed_differs(capsys, tmp_path, old, new, first):
    status, report = check(capsys, golden_with(tmp_path, old, new, prefix="\ufeff".encode()))
    assert status == 1 and line(report, "first difference") == f"first difference: {first}, reference " + (
        "32033" if "docs" in old else "'3.3660'")


def test_printed_in_full_is_compared_to_the_last_bit(capsys, tmp_path):
    """Losses printed as Python's repr pin down their doubles: equal ones are
    bit-exact, and one a unit in the last place off differs, though it is
    equal to the reference rounded to as many decimals as it printed."""
    losses = Run(steps=50).train()
    path = tmp_path / "out.txt"
    lines = [f"step {k} / 50 | loss {x!r}" for k, x in enumerate(losses, 1)]
    path.write_text("\n".join(lines))
    status, report = check(capsys, str(path), "--steps", "50")
    assert status == 0 and line(report, "verdict") == (
        "verdict: bit-exact: every printed line equal, every loss to the last bit (printed in full)")
    # a step whose one-ulp-off repr rounds, to its own decimals, to the reference's: what passed before
    k, off = next((k, off) for k, x in enumerate(losses, 1) for off in (math.nextafter(x, 0), math.nextafter(x, 9))
                  if f"{x:.{len(repr(off).partition('.')[2])}f}" == repr(off))
    lines[k - 1] = f"step {k} / 50 | loss {off!r}"
    path.write_text("\n".join(lines))
    status, report = check(capsys, str(path), "--steps", "50")
    assert status == 1 and line(report, "first difference") == (
        f"first difference: step {k}: theirs {repr(off)!r}, reference {repr(losses[k - 1])!r}")


def test_exponent_notation_is_compared_to_its_digits(capsys, tmp_path):
    losses = Run(steps=5).train()
    path = tmp_path / "out.txt"
    path.write_text("".join(f"step {k} / 5 | loss {x:.4e}\n" for k, x in enumerate(losses, 1)))  # 3.3660e+00
    status, report = check(capsys, str(path), "--steps", "5")
    assert status == 0 and "loss lines equal: 5 / 5" in report
    assert line(report, "verdict").startswith("verdict: equal to the printed digits")


def test_names_keep_their_own_spaces(capsys, tmp_path):
    """Names that begin or end with a space, U+00A0 or U+3000 (the vocabulary
    has them inside documents) are compared as printed: microgpt_c's own
    output is equal."""
    data = tmp_path / "docs.txt"
    data.write_text("a b\nc\u00a0d\ne\u3000f\nab\ncd\n")
    flags = ["--steps", "3", "--n-embd", "4", "--n-head", "1", "--data", str(data), "--temperature", "4"]
    status, out, _ = run_main(*flags, "--num-samples", "100")
    names = [ln.partition(": ")[2] for ln in out.splitlines() if ln.startswith("sample")]
    assert {n[-1] for n in names if n} >= {" ", "\u00a0", "\u3000"}  # what this seed draws
    path = tmp_path / "out.txt"
    path.write_text(out, encoding="utf-8")
    status, report = check(capsys, str(path), *flags)
    assert status == 0 and "names equal: 100 / 100" in report, report


def test_a_number_too_long_for_a_run_is_one_line_naming_its_line(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("step 1 / 1000 | loss 3.3660\nstep " + "1" * 5000 + " / 1000 | loss 3.3660\n")
    status, out, err = run_main("check", str(path))
    assert status == 2 and out == "" and err.count("\n") == 1
    assert f"{path}: line 2: a number of 5,000 digits" in err, err


def test_an_error_names_what_failed_even_when_python_does_not(tmp_path, monkeypatch):
    """A MemoryError that says nothing (as under a memory limit) is still a line that says what."""
    import microgpt_c.check

    def fail(*args):
        raise MemoryError()

    for name, says in (("parse", f"out of memory reading {GOLDEN}"), ("reference_run", "out of memory (")):
        with monkeypatch.context() as m:
            m.setattr(microgpt_c.check, name, fail)
            status, out, err = run_main("check", GOLDEN)
        assert status == 2 and err.count("\n") == 1 and f"error: {says}" in err, err
