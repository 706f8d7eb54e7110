"""The command line. Most tests call main(argv) in this process; a few run
python -m microgpt_c as a user runs it (installed package, another directory):
the default run prints the reference's output, bad input is one line on
stderr and exit status 2, Ctrl-C and kill leave a checkpoint to go on from."""
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import GOLDEN, result_lines, run_main

from microgpt_c import Run


def cli(*args):
    """The output lines of a run that must succeed (in this process, in the current directory)."""
    status, out, err = run_main(*args)
    assert status == 0, err
    return out.splitlines()


def cli_fails(*args):
    """(stdout, stderr) of a run that must fail: status 2 and one line on stderr."""
    status, out, err = run_main(*args)
    assert status == 2, (status, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return out, err


def subprocess_cli(*args, cwd):
    """python -m microgpt_c in a child process: (exit status, stdout, stderr)."""
    r = subprocess.run([sys.executable, "-m", "microgpt_c", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=600)
    return r.returncode, r.stdout, r.stderr


def test_default_run_matches_reference(tmp_path):
    status, out, err = subprocess_cli("--log-every", "1", cwd=tmp_path)
    assert status == 0, err
    out = out.splitlines()
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
    c = result_lines(cli("--engine", "c", *flags))
    py = result_lines(cli("--engine", "python", *flags))
    assert c == py
    assert len([ln for ln in c if ln.startswith("sample ")]) == int(flags[flags.index("--num-samples") + 1])


def test_log_every():
    steps = [ln for ln in cli("--steps", "10", "--log-every", "4", "--num-samples", "1") if ln.startswith("step ")]
    assert [ln[:14] for ln in steps] == ["step    4 /   ", "step    8 /   ", "step   10 /   "]


def test_fast_mode_run():
    out = cli("--mode", "fast", "--steps", "50", "--num-samples", "3")
    assert len([ln for ln in out if ln.startswith("step ")]) == 50
    assert len([ln for ln in out if ln.startswith("sample ")]) == 3


def test_bench_prints_the_table(tmp_path):
    """The engines named (the default set depends on what is installed): one
    row each, in that order, and the raw figures."""
    status, out, err = run_main("bench", "--engines", "python:exact,c:exact,c:fast", "--steps", "20",
                                "--python-steps", "2", "--json", str(tmp_path / "b.json"))
    assert status == 0, err
    out, err = out.splitlines(), err.splitlines()
    assert [ln.split(", ")[0] for ln in err] == [f"python -m microgpt_c bench: {e}{done}"
                                                 for e in ("python:exact", "c:exact", "c:fast")
                                                 for done in (" ...", " done")]  # progress, as each runs
    rows = [ln.split() for ln in out]
    assert rows[0] == ["engine:mode", "steps", "ms/step", "speedup", "graph", "nodes/step", "RSS", "MB", "loss", "@",
                       "step", "same", "losses"]
    assert max(map(len, out)) <= 100  # header, three engines, the notes
    assert [r[:2] for r in rows[1:4]] == [["python:exact", "2"], ["c:exact", "20"], ["c:fast", "20"]]
    assert [r[7:9] for r in rows[1:4]] == [["@", "2"], ["@", "20"], ["@", "20"]]  # the step each loss is from
    assert rows[2][9:] == ["yes,", "2", "steps"]  # C exact's losses equal the pure-Python engine's
    assert rows[2][4] == rows[3][4] == "kernel" and int(rows[1][4].replace(",", "")) > 10_000  # one node: no count
    assert all(re.fullmatch(r"[\d,]+(\.\d+)?", r[2]) for r in rows[1:4])  # plain decimals: no 3.602e+04
    notes = " ".join(out[4:])
    assert "pure-Python engine runs the first 2 steps" in notes and "whole-document kernel" in notes
    figures = json.loads((tmp_path / "b.json").read_text())
    assert [(f["engine"], f["mode"], len(f["step_seconds"])) for f in figures] == [
        ("python", "exact", 2), ("c", "exact", 20), ("c", "fast", 20)]


def test_bench_engines():
    out = cli("bench", "--engines", "c:fast,c:exact", "--steps", "12")
    rows = [ln.split() for ln in out[1:3]]
    assert [r[:2] for r in rows] == [["c:fast", "12"], ["c:exact", "12"]]
    assert rows[0][3] == "1x" and rows[0][9:] == ["(baseline)"]
    notes = " ".join(out[3:])
    assert "c:fast's median over this one's" in notes and "pure-Python" not in notes
    out, err = cli_fails("bench", "--engines", "c:exact,python:fast")
    assert out == "" and "'c:exact,python:fast': expected engine:mode pairs" in err


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
    (["--temperature", "0"], "--temperature must be a positive number"),
    (["--temperature", "-0.5"], "--temperature must be a positive number"),
    (["--engine", "python", "--mode", "fast"], "exact mode only"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"\n   \n\t\n")
    (tmp_path / "latin1.txt").write_bytes("zoë\n".encode("latin-1"))
    out, err = cli_fails(*args)
    assert out == ""  # nothing printed before the error
    assert says in err


@pytest.mark.parametrize("engine", ["c", "python"])
def test_non_finite_loss_stops_naming_step_and_document(engine):
    out, err = cli_fails("--engine", engine, "--lr", "1e9", "--steps", "40", "--n-embd", "8", "--n-head", "2")
    assert "training stopped at step" in err and "document '" in err
    assert "sample" not in out


def test_tiny_long_and_unicode_documents(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "one.txt").write_text("a\n", encoding="utf-8")
    (tmp_path / "uni.txt").write_text("é\n北京\nżółć\n" + "長" * 40 + "\n", encoding="utf-8")
    one = result_lines(cli("--data", "one.txt", "--steps", "5", "--num-samples", "2"))
    assert one[:3] == ["num docs: 1", "vocab size: 2", f"num params: {2 * 16 + 16 * 16 + 2 * 16 + 12 * 16 * 16}"]
    for engine in ("c", "python"):  # documents longer than the block are cut to it
        uni = result_lines(cli("--engine", engine, "--data", "uni.txt", "--steps", "4", "--block-size", "8",
                               "--num-samples", "3"))
        assert uni[1] == "vocab size: 9"  # 8 characters and BOS
        if engine == "c":
            c_lines = uni
    assert uni == c_lines


# Checkpoints, Ctrl-C, sampling from a checkpoint, progress and plots.

def step_lines(lines):
    return [ln for ln in lines if ln.startswith("step ")]


def sample_lines(lines):
    return [ln for ln in lines if ln.startswith("sample ")]


class Started:
    """python -m microgpt_c in a child process, its stdout on a one-page pipe
    read through a small buffer: the child cannot get more than a few hundred
    bytes past what the test has read. A LONG run is thus still training
    whenever the test acts on a line it read, however loaded the machine."""

    def __init__(self, *args, cwd):
        r, w = os.pipe()
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)  # the smallest pipe (a page)
        self.p = subprocess.Popen([sys.executable, "-m", "microgpt_c", *args], cwd=cwd, stdout=w,
                                  stderr=subprocess.PIPE)
        os.close(w)
        self.stdout = open(r, "rb", buffering=256)  # the one reader of stdout
        self.lines = []

    def read_until(self, prefix):
        """Read stdout up to and including the line that starts with prefix."""
        for line in self.stdout:
            self.lines.append(line.decode())
            if line.startswith(prefix.encode()):
                return
        raise AssertionError(f"no line starts with {prefix!r}: {self.lines[-3:]}")

    def finish(self):
        """The rest of stdout, then stderr: (exit status, all stdout lines, stderr)."""
        self.lines += self.stdout.read().decode().splitlines(keepends=True)
        self.stdout.close()
        err = self.p.stderr.read().decode()
        self.p.stderr.close()
        return self.p.wait(timeout=600), "".join(self.lines).splitlines(), err


LONG = ["--steps", "500", "--num-samples", "5"]  # 500 step lines: ~15 KB, well over a page


@pytest.fixture(scope="module")
def long_run():
    """The uninterrupted run that stopped and resumed runs must reproduce."""
    return cli(*LONG)


def test_ctrl_c_without_save(tmp_path):
    run = Started(*LONG, cwd=tmp_path)
    run.read_until("step    2 /")
    run.p.send_signal(signal.SIGINT)
    status, out, err = run.finish()
    assert status == 130
    assert re.fullmatch(r"python -m microgpt_c: interrupted by SIGINT after step \d+ of 500: nothing saved\n", err)
    assert os.listdir(tmp_path) == []


def test_save_every_leaves_a_checkpoint_when_killed(tmp_path, monkeypatch, long_run):
    """Killed outright (no chance to save at the end), the run leaves its last
    --save-every checkpoint, from which it goes on exactly."""
    run = Started(*LONG, "--save", "ck.npz", "--save-every", "7", cwd=tmp_path)
    run.read_until("step   30 /")
    run.p.kill()
    run.finish()
    k = Run.load(tmp_path / "ck.npz").step
    assert k % 7 == 0 and 28 <= k < 500
    monkeypatch.chdir(tmp_path)
    resumed = cli("--resume", "ck.npz", "--num-samples", "5")
    assert step_lines(resumed) == step_lines(long_run)[k:]
    assert sample_lines(resumed) == sample_lines(long_run)


def proc_stat(pid):
    """The fields of /proc/PID/stat after the command's name (state, ppid, ...); None once it is reaped."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()
    except OSError:
        return None


def wait_for(condition, seconds=30):
    """Poll condition until it is true, for at most seconds (a bound, not a timing the test relies on)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="finds the worker in /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_a_bench_worker_ends_with_its_parent(tmp_path, sig):
    """bench's worker ends when bench does, killed by a signal it can handle
    (it ends the worker) or by SIGKILL (the worker learns of it)."""
    parent = subprocess.Popen([sys.executable, "-m", "microgpt_c", "bench", "--steps", "1000000", "--engines",
                               "c:exact"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers = []

    def started():
        workers[:] = [int(d) for d in os.listdir("/proc") if d.isdigit() and (proc_stat(d) or [0, 0])[1] ==
                      str(parent.pid)]
        return workers

    try:
        assert wait_for(started), "no worker started"
        parent.send_signal(sig)
        parent.wait()
        assert wait_for(lambda: (proc_stat(workers[0]) or ["X"])[0] in "ZX"), "the worker goes on"
    finally:
        parent.kill()
        for pid in workers:
            if (proc_stat(pid) or ["X"])[0] not in "ZX":
                os.kill(pid, signal.SIGKILL)


def test_sample_from_a_checkpoint(tmp_path, monkeypatch):
    import random

    monkeypatch.chdir(tmp_path)
    trained = sample_lines(cli("--steps", "30", "--num-samples", "6", "--save", "ck.npz"))
    assert len(trained) == 6
    # The final checkpoint's random generator is where sampling began: the same names.
    assert cli("sample", "--load", "ck.npz", "--num-samples", "6") == trained
    assert cli("sample", "--load", "ck.npz", "--num-samples", "6", "--engine", "python") == trained
    seeded = cli("sample", "--load", "ck.npz", "--num-samples", "4", "--seed", "9", "--temperature", "0.8")
    run = Run.load(tmp_path / "ck.npz")
    run.rng = random.Random(9)
    assert seeded == [f"sample {i + 1:2d}: {name}" for i, name in enumerate(run.sample(4, 0.8))]
    prefixed = cli("sample", "--load", "ck.npz", "--num-samples", "5", "--prefix", "mar")
    assert len(prefixed) == 5 and all(ln.split(": ", 1)[1].startswith("mar") for ln in prefixed)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A directory with a finished run's checkpoint (ck.npz) and non-checkpoints."""
    import numpy as np

    d = tmp_path_factory.mktemp("ck")
    Run(steps=3).save(d / "ck.npz")
    (d / "names.txt").write_text("emma\nava\n")
    (d / "cut.npz").write_bytes((d / "ck.npz").read_bytes()[:5000])
    np.savez(d / "foreign.npz", weights=np.zeros(3))
    return d


@pytest.mark.parametrize("args,says", [
    (["sample"], "the following arguments are required: --load"),
    (["sample", "--load", "ck.npz", "--prefix", "aZq1"], "characters not in the vocabulary: '1', 'Z'"),
    (["sample", "--load", "ck.npz", "--prefix", "a" * 16], "shorter than block_size (16), not 16 characters"),
    (["sample", "--load", "ck.npz", "--temperature", "0"], "--temperature must be a positive number"),
    (["sample", "--load", "ck.npz", "--num-samples", "-1"], "--num-samples must be a whole number, 0 or more"),
    (["sample", "--load", "missing.npz"], "missing.npz: No such file or directory"),
    (["sample", "--load", "names.txt"], "names.txt: not a valid microgpt_c checkpoint: cannot read it"),
    (["sample", "--load", "cut.npz"], "cut.npz: not a valid microgpt_c checkpoint: cannot read it"),
    (["sample", "--load", "foreign.npz"], "foreign.npz: not a valid microgpt_c checkpoint: an unexpected member 'weights.npy'"),
    (["--resume", "names.txt"], "names.txt: not a valid microgpt_c checkpoint: cannot read it"),
    (["--resume", "cut.npz"], "cut.npz: not a valid microgpt_c checkpoint: cannot read it"),
    (["--resume", "foreign.npz"], "foreign.npz: not a valid microgpt_c checkpoint: an unexpected member 'weights.npy'"),
    (["--resume", "."], ".: a directory, not a regular file"),
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
def test_bad_checkpoint_and_flag_input(checkpoint, monkeypatch, args, says):
    monkeypatch.chdir(checkpoint)
    before = sorted(os.listdir(checkpoint))
    out, err = cli_fails(*args)
    assert out == ""
    assert says in err, err
    assert sorted(os.listdir(checkpoint)) == before  # nothing written


@pytest.mark.parametrize("args,says", [
    (["--n-embd", "10"], "python -m microgpt_c: error: --n-embd 10 is not a multiple of --n-head 4\n"),
    (["sample", "--load", "cut.npz"], "python -m microgpt_c sample: error: cut.npz: not a valid microgpt_c "
                                      "checkpoint: cannot read it"),
], ids=["flag", "checkpoint"])
def test_exit_status_2_from_the_command(checkpoint, args, says):
    """The contract as a shell sees it: nothing on stdout, one line on stderr,
    exit status 2 (the tests above check the messages in-process)."""
    status, out, err = subprocess_cli(*args, cwd=checkpoint)
    assert (status, out) == (2, ""), err
    assert len(err.splitlines()) == 1 and err.startswith(says), err


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib raises ImportError
    assert run_main("--plot", "loss.png") == (2, "", (  # before training
        "python -m microgpt_c: error: --plot needs matplotlib: "
        "pip install '.[plot]' from a checkout, or pip install matplotlib\n"))
    assert os.listdir(tmp_path) == []


def test_plot(tmp_path, monkeypatch):
    imread = pytest.importorskip("matplotlib.image").imread  # in the test extra
    monkeypatch.chdir(tmp_path)
    cli("--mode", "fast", "--steps", "200", "--num-samples", "1", "--plot", "loss.png")
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
    status, out, err = run_main("--steps", "3")
    assert (status, err) == (0, "")  # no terminal, no progress line


def test_terminal_shows_every_100th_step(tmp_path):
    term, _ = read_terminal(["--steps", "250", "--num-samples", "1"], tmp_path, stdout_is_terminal=True)
    # What stays on the screen: each line as its last carriage return and erase-line left it.
    shown = [ln.split("\r")[-1].replace("\x1b[K", "") for ln in term.split("\r\n")]
    assert [ln[:16] for ln in shown[3:6]] == ["step  100 /  250", "step  200 /  250", "step  250 /  250"]
    assert shown[6].startswith("training time: ") and len(step_lines(shown)) == 3
    assert "smoothed" in term and not any("smoothed" in ln for ln in shown)  # drawn, then cleared


@pytest.mark.parametrize("x, shown", [(36020.4, "36,020"), (328.54, "328.5"), (0.23154, "0.2315"),
                                      (0.038291, "0.03829"), (1.0, "1.000"), (0, "0")])
def test_bench_times_are_plain_decimals(x, shown):
    from microgpt_c.bench import decimal
    assert decimal(x) == shown
