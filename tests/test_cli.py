"""python -m microgpt_c, run as a user runs it (installed package, another
directory): the default run prints the reference's output."""
import os
import re
import signal
import subprocess
import sys

import pytest

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "microgpt_seed42.txt")


def cli(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "microgpt_c", *args], cwd=cwd,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def result_lines(lines):
    return [ln for ln in lines if ln.startswith(("num ", "vocab ", "step ", "sample "))]


def test_default_run_matches_reference(tmp_path):
    out = cli("--log-every", "1", cwd=tmp_path)
    with open(GOLDEN) as f:
        assert result_lines(out) == f.read().splitlines()
    assert any(ln.startswith("training time: ") and ln.endswith("ms/step)") for ln in out)


@pytest.mark.parametrize("flags", [
    ["--seed", "7", "--steps", "5", "--n-embd", "8", "--n-head", "2", "--block-size", "6",
     "--temperature", "0.8", "--num-samples", "4", "--lr", "0.02"],
    ["--steps", "3", "--n-layer", "2", "--n-embd", "12", "--n-head", "3", "--num-samples", "3", "--data", "DATA"],
])
def test_engines_print_the_same(tmp_path, flags):
    (tmp_path / "d.txt").write_text("ab\n\n  héllo \nzz\nöa\n", encoding="utf-8")
    flags = [str(tmp_path / "d.txt") if f == "DATA" else f for f in flags]
    c = result_lines(cli("--engine", "c", *flags, cwd=tmp_path))
    py = result_lines(cli("--engine", "python", *flags, cwd=tmp_path))
    assert c == py
    assert len([ln for ln in c if ln.startswith("sample ")]) == int(flags[flags.index("--num-samples") + 1])


def test_log_every(tmp_path):
    steps = [ln for ln in cli("--steps", "10", "--log-every", "4", "--num-samples", "1", cwd=tmp_path)
             if ln.startswith("step ")]
    assert [ln[:14] for ln in steps] == ["step    4 /   ", "step    8 /   ", "step   10 /   "]


def test_fast_mode_run(tmp_path):
    out = cli("--mode", "fast", "--steps", "50", "--num-samples", "3", cwd=tmp_path)
    assert len([ln for ln in out if ln.startswith("step ")]) == 50
    assert len([ln for ln in out if ln.startswith("sample ")]) == 3


def test_bench_prints_the_table(tmp_path):
    out = cli("bench", "--steps", "20", "--python-steps", "2", "--json", str(tmp_path / "b.json"), cwd=tmp_path)
    rows = [ln.split() for ln in out]
    assert [r[:3] for r in rows[1:4]] == [["python", "exact", "2"], ["c", "exact", "20"], ["c", "fast", "20"]]
    assert rows[2][8:10] == ["yes,", "bit"]  # C exact's losses equal the pure-Python engine's
    import json
    figures = json.loads((tmp_path / "b.json").read_text())
    assert [len(f["step_seconds"]) for f in figures] == [2, 20, 20]


def test_bench_engines(tmp_path):
    out = cli("bench", "--engines", "c:fast,c:exact", "--steps", "12", cwd=tmp_path)
    assert "speedup vs c:fast" in out[0] and "losses equal c:fast's" in out[0]
    rows = [ln.split() for ln in out[1:3]]
    assert [r[:3] for r in rows] == [["c", "fast", "12"], ["c", "exact", "12"]]
    assert rows[0][4] == "1x" and rows[0][8:] == ["(the", "baseline)"]
    assert "pure-Python" not in out[3]
    r = subprocess.run([sys.executable, "-m", "microgpt_c", "bench", "--engines", "c:exact,python:fast"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and "'c:exact,python:fast': expected engine:mode pairs" in r.stderr


def cli_fails(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "microgpt_c", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stdout, r.stderr


@pytest.mark.parametrize("args,says", [
    (["--data", "missing.txt"], "No such file"),
    (["--data", "."], "directory"),
    (["--data", "empty.txt"], "no documents"),
    (["--data", "blank.txt"], "no documents"),
    (["--data", "latin1.txt"], "not UTF-8"),
    (["--n-embd", "10"], "--n-embd 10 is not a multiple of --n-head 4"),
    (["--n-embd", "0"], "--n-embd must be 1 or more"),
    (["--n-head", "0"], "--n-head must be 1 or more"),
    (["--block-size", "0"], "--block-size must be 1 or more"),
    (["--n-layer", "-1"], "--n-layer must be 0 or more"),
    (["--steps", "-1"], "--steps must be 0 or more"),
    (["--temperature", "0"], "--temperature must be above 0"),
    (["--temperature", "-0.5"], "--temperature must be above 0"),
    (["--engine", "python", "--mode", "fast"], "exact mode only"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, says):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"\n   \n\t\n")
    (tmp_path / "latin1.txt").write_bytes("zoë\n".encode("latin-1"))
    out, err = cli_fails(*args, cwd=tmp_path)
    assert out == ""  # nothing printed before the error
    assert says in err


@pytest.mark.parametrize("engine", ["c", "python"])
def test_non_finite_loss_stops_naming_step_and_document(tmp_path, engine):
    out, err = cli_fails("--engine", engine, "--lr", "1e9", "--steps", "40", "--n-embd", "8", "--n-head", "2",
                         cwd=tmp_path)
    assert "training stopped at step" in err and "document '" in err
    assert "sample" not in out


def test_tiny_long_and_unicode_documents(tmp_path):
    (tmp_path / "one.txt").write_text("a\n", encoding="utf-8")
    (tmp_path / "uni.txt").write_text("é\n北京\nżółć\n" + "長" * 40 + "\n", encoding="utf-8")
    one = result_lines(cli("--data", "one.txt", "--steps", "5", "--num-samples", "2", cwd=tmp_path))
    assert one[:3] == ["num docs: 1", "vocab size: 2", f"num params: {2 * 16 + 16 * 16 + 2 * 16 + 12 * 16 * 16}"]
    for engine in ("c", "python"):  # documents longer than the block are cut to it
        uni = result_lines(cli("--engine", engine, "--data", "uni.txt", "--steps", "4", "--block-size", "8",
                               "--num-samples", "3", cwd=tmp_path))
        assert uni[1] == "vocab size: 9"  # 8 characters and BOS
        if engine == "c":
            c_lines = uni
    assert uni == c_lines


# Checkpoints, Ctrl-C, sampling from a checkpoint, progress and plots.

def step_lines(lines):
    return [ln for ln in lines if ln.startswith("step ")]


def sample_lines(lines):
    return [ln for ln in lines if ln.startswith("sample ")]


def start(*args, cwd):
    return subprocess.Popen([sys.executable, "-m", "microgpt_c", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


LONG = ["--steps", "3000", "--num-samples", "5"]  # its output fills a pipe long before its end


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    """The uninterrupted run that stopped and resumed runs must reproduce."""
    return cli(*LONG, cwd=tmp_path_factory.mktemp("long"))


def test_ctrl_c_saves_the_last_step_and_resume_goes_on_exactly(tmp_path, long_run):
    p = start(*LONG, "--save", "ck.npz", cwd=tmp_path)
    head = [p.stdout.readline() for _ in range(8)]  # the 3 header lines and 5 steps
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 130
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    k = int(re.search(r"interrupted by SIGINT after step (\d+) of 3000: saved step \1 to ck.npz", err)[1])
    done = step_lines("".join(head + [out]).splitlines())
    assert 5 <= k < 3000 and done == step_lines(long_run)[:k]  # the saved step is the last one printed
    assert sample_lines(out.splitlines()) == []
    resumed = cli("--resume", "ck.npz", "--num-samples", "5", cwd=tmp_path)
    assert f"resumed from ck.npz at step {k} / 3000" in resumed
    assert step_lines(resumed) == step_lines(long_run)[k:]
    assert sample_lines(resumed) == sample_lines(long_run)


def test_ctrl_c_without_save(tmp_path):
    p = start(*LONG, cwd=tmp_path)
    [p.stdout.readline() for _ in range(5)]
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=600)
    assert p.returncode == 130
    assert re.fullmatch(r"python -m microgpt_c: interrupted by SIGINT after step \d+ of 3000: nothing saved\n", err)
    assert os.listdir(tmp_path) == []


def test_save_every_leaves_a_checkpoint_when_killed(tmp_path, long_run):
    """Killed outright (no chance to save at the end), the run leaves its last
    --save-every checkpoint, from which it goes on exactly."""
    from microgpt_c import Run
    p = start(*LONG, "--save", "ck.npz", "--save-every", "7", cwd=tmp_path)
    while not p.stdout.readline().startswith("step   30 /"):
        pass
    p.kill()
    p.communicate(timeout=600)
    k = Run.load(tmp_path / "ck.npz").step
    assert k % 7 == 0 and k >= 28
    resumed = cli("--resume", "ck.npz", "--num-samples", "5", cwd=tmp_path)
    assert step_lines(resumed) == step_lines(long_run)[k:]
    assert sample_lines(resumed) == sample_lines(long_run)


def test_sample_from_a_checkpoint(tmp_path):
    import random

    from microgpt_c import Run
    trained = sample_lines(cli("--steps", "30", "--num-samples", "6", "--save", "ck.npz", cwd=tmp_path))
    assert len(trained) == 6
    # The final checkpoint's random generator is where sampling began: the same names.
    assert cli("sample", "--load", "ck.npz", "--num-samples", "6", cwd=tmp_path) == trained
    assert cli("sample", "--load", "ck.npz", "--num-samples", "6", "--engine", "python", cwd=tmp_path) == trained
    seeded = cli("sample", "--load", "ck.npz", "--num-samples", "4", "--seed", "9", "--temperature", "0.8",
                 cwd=tmp_path)
    run = Run.load(tmp_path / "ck.npz")
    run.rng = random.Random(9)
    assert seeded == [f"sample {i + 1:2d}: {name}" for i, name in enumerate(run.sample(4, 0.8))]
    prefixed = cli("sample", "--load", "ck.npz", "--num-samples", "5", "--prefix", "mar", cwd=tmp_path)
    assert len(prefixed) == 5 and all(ln.split(": ", 1)[1].startswith("mar") for ln in prefixed)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A directory with a finished run's checkpoint (ck.npz) and non-checkpoints."""
    from microgpt_c import Run
    d = tmp_path_factory.mktemp("ck")
    Run(steps=3).save(d / "ck.npz")
    (d / "names.txt").write_text("emma\nava\n")
    (d / "cut.npz").write_bytes((d / "ck.npz").read_bytes()[:5000])
    import numpy as np
    np.savez(d / "foreign.npz", weights=np.zeros(3))
    return d


@pytest.mark.parametrize("args,says", [
    (["sample"], "the following arguments are required: --load"),
    (["sample", "--load", "ck.npz", "--prefix", "aZq1"], "characters not in the vocabulary: '1', 'Z'"),
    (["sample", "--load", "ck.npz", "--prefix", "a" * 16], "shorter than block_size (16), not 16 characters"),
    (["sample", "--load", "ck.npz", "--temperature", "0"], "--temperature must be above 0"),
    (["sample", "--load", "ck.npz", "--num-samples", "-1"], "--num-samples must be 0 or more"),
    (["sample", "--load", "missing.npz"], "missing.npz: No such file or directory"),
    (["sample", "--load", "names.txt"], "names.txt: not a valid microgpt_c checkpoint: cannot read it"),
    (["sample", "--load", "cut.npz"], "cut.npz: not a valid microgpt_c checkpoint: cannot read it"),
    (["sample", "--load", "foreign.npz"], "foreign.npz: not a valid microgpt_c checkpoint: no format marker"),
    (["--resume", "names.txt"], "names.txt: not a valid microgpt_c checkpoint: cannot read it"),
    (["--resume", "cut.npz"], "cut.npz: not a valid microgpt_c checkpoint: cannot read it"),
    (["--resume", "foreign.npz"], "foreign.npz: not a valid microgpt_c checkpoint: no format marker"),
    (["--resume", "."], ".: Is a directory"),
    (["--resume", "ck.npz", "--seed", "1", "--n-embd", "8", "--data", "names.txt"],
     "--n-embd, --seed, --data cannot be given with it"),
    (["--resume", "ck.npz", "--engine", "python", "--mode", "fast"], "exact mode only"),
    (["--save-every", "5"], "--save-every needs --save"),
    (["--save", "ck2.npz", "--save-every", "0"], "--save-every needs --save, and must be 1 or more"),
    (["--save", "nowhere/ck.npz"], "cannot write nowhere/ck.npz: No such file or directory"),
    (["--save", "."], "cannot write .: it is a directory"),
    (["--plot", "loss.pdf"], "--plot writes a PNG: the file name must end in .png"),
    (["--log-every", "0"], "--log-every must be 1 or more"),
])
def test_bad_checkpoint_and_flag_input(checkpoint, args, says):
    before = sorted(os.listdir(checkpoint))
    out, err = cli_fails(*args, cwd=checkpoint)
    assert out == ""
    assert says in err, err
    assert sorted(os.listdir(checkpoint)) == before  # nothing written


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path):
    (tmp_path / "hide").mkdir()
    (tmp_path / "hide" / "matplotlib.py").write_text("raise ImportError('no matplotlib here')\n")
    r = subprocess.run([sys.executable, "-m", "microgpt_c", "--plot", "loss.png"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(tmp_path / "hide")})
    assert (r.returncode, r.stdout) == (2, "")  # before training
    assert r.stderr == ("python -m microgpt_c: error: --plot needs matplotlib: "
                        "pip install '.[plot]' from a checkout, or pip install matplotlib\n")
    assert not (tmp_path / "loss.png").exists()


def test_plot(tmp_path):
    from matplotlib.image import imread  # in the test extra
    cli("--mode", "fast", "--steps", "200", "--num-samples", "1", "--plot", "loss.png", cwd=tmp_path)
    png = imread(tmp_path / "loss.png")[:, :, :3]
    assert png.shape[0] >= 400 and png.shape[1] >= 600

    def pixels(rgb):  # how many pixels are (about) this colour
        return int((abs(png - [c / 255 for c in rgb]).max(axis=2) < 0.02).sum())

    assert pixels((255, 127, 14)) > 500  # the smoothed curve, in orange
    assert pixels((31, 119, 180)) + pixels((143, 187, 217)) > 200  # each step's loss, in (light) blue


def read_terminal(args, cwd, stdout_is_terminal):
    """Run with stderr (and maybe stdout) on a pseudo-terminal: (what the
    terminal got, stdout if it was a pipe)."""
    import pty
    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "microgpt_c", *args], cwd=cwd, stderr=slave,
                         stdout=slave if stdout_is_terminal else subprocess.PIPE, text=True)
    os.close(slave)
    out = "" if stdout_is_terminal else p.stdout.read()
    seen = b""
    while True:
        try:
            chunk = os.read(master, 1 << 16)
        except OSError:  # EIO: the child has closed the terminal
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert p.wait(timeout=600) == 0
    return seen.decode(), out


def test_progress_line_on_a_terminal(tmp_path):
    term, out = read_terminal(["--steps", "300", "--num-samples", "2"], tmp_path, stdout_is_terminal=False)
    losses = {ln[:16]: ln.split()[-1] for ln in step_lines(out.splitlines())}
    assert len(losses) == 300  # piped: every step's line, as the reference prints them
    drawn = re.findall(r"\r(step +\d+ / +300) \| loss (\S+) \| smoothed \S+ \| [\d,.]+ steps/s \| ETA \d+:\d\d\x1b\[K",
                       term)
    assert drawn[0] == ("step    1 /  300", losses["step    1 /  300"])
    assert drawn[-1] == ("step  300 /  300", losses["step  300 /  300"])
    assert all(loss == losses[step] for step, loss in drawn)
    assert term.endswith("\r\x1b[K")  # cleared at the end
    r = subprocess.run([sys.executable, "-m", "microgpt_c", "--steps", "3"], cwd=tmp_path, capture_output=True)
    assert r.stderr == b""  # no terminal, no progress line


def test_terminal_shows_every_100th_step(tmp_path):
    term, _ = read_terminal(["--steps", "250", "--num-samples", "1"], tmp_path, stdout_is_terminal=True)
    # What stays on the screen: each line as its last carriage return and erase-line left it.
    shown = [ln.split("\r")[-1].replace("\x1b[K", "") for ln in term.split("\r\n")]
    assert [ln[:16] for ln in shown[3:6]] == ["step  100 /  250", "step  200 /  250", "step  250 /  250"]
    assert shown[6].startswith("training time: ") and len(step_lines(shown)) == 3
    assert "smoothed" in term and not any("smoothed" in ln for ln in shown)  # drawn, then cleared
