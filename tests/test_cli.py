"""The command line. Most tests call main(argv) in this process; a few run
python -m microgpt_c as a user runs it (installed package, another directory):
the default run prints the reference's output, bad input is one line on
stderr and exit status 2, Ctrl-C and kill leave a checkpoint to go on from."""
import fcntl
import json
import os
import re
import resource
import signal
import subprocess
import sys
import time

import pytest
from conftest import GOLDEN, PROG, REPO, SMALL_ARGS, TINY_ARGS, one_line_error, result_lines, run_main

import microgpt_c
from microgpt_c import Run, Tokenizer


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


def child(*args, cwd, limit=None, **kw):
    """python -m microgpt_c in a child process running this checkout's code,
    with an address-space limit of `limit` bytes if given."""
    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, "-m", "microgpt_c", *map(str, args)], cwd=cwd, env=env, text=True,
                            preexec_fn=preexec if limit else None, **kw)


def parser(command):
    """The command's parser, as python -m microgpt_c fills it in."""
    from microgpt_c.__main__ import parsers
    return parsers(command)[2]


def lines(out, start):
    return [ln for ln in out.splitlines() if ln.startswith(start)]


BENCH = "python -m microgpt_c bench"


STOPPABLE = ["--steps", 5000, "--n-embd", 8, "--n-head", 2, "--num-samples", 5]  # 5,000 lines: more than a pipe holds


OVERFLOW = ["--steps", "3", "--lr", "1e308"]  # the weights overflow at step 2


def test_under_an_address_space_limit_a_run_too_big_is_one_line(tmp_path):
    limit = 700 * 2**20
    p = child("--n-embd", 1024, "--steps", 1, cwd=tmp_path, limit=limit, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=600)
    assert (p.returncode, out) == (2, ""), err
    assert re.fullmatch(r"python -m microgpt_c: error: the run needs about 1\.\d GiB \(12,654,592 parameters with "
                        r"Adam's moments, 4,197,904 numbers for a step of 16 positions\), more than the [\d.]+ MiB "
                        r"of room under the address-space limit \(RLIMIT_AS\)\n", err), err
    p = child(*SMALL_ARGS, cwd=tmp_path, limit=limit, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=600)  # a run that fits still runs under the limit
    assert (p.returncode, err) == (0, "") and "sample  1: " in out


@pytest.mark.parametrize("where", ["step", "save"])
def test_a_late_memory_error_is_one_line_and_keeps_the_checkpoint(tmp_path, capsys, monkeypatch, where):
    """Past the estimate, the allocation that fails (a step's nodes, or the
    checkpoint being written) ends the run with one line, status 2; the
    checkpoint of the last --save-every stays whole."""
    import numpy as np
    ck = tmp_path / "ck.npz"
    calls, train_step, savez = [], Run.train_step, np.savez_compressed

    def failing_step(self):
        calls.append("step")
        if len(calls) == 3:
            raise MemoryError("cannot allocate 524544 more nodes")
        return train_step(self)

    def failing_savez(f, **arrays):
        calls.append("save")
        if len(calls) == 3:
            f.write(b"half a checkpoint")
            raise MemoryError()
        return savez(f, **arrays)
    if where == "step":
        monkeypatch.setattr(Run, "train_step", failing_step)
    else:
        monkeypatch.setattr(np, "savez_compressed", failing_savez)
    status, out, err = run_main(*SMALL_ARGS, "--steps", 5, "--save", ck, "--save-every", 1)
    assert status == 2 and "Traceback" not in err, err
    assert err == ("python -m microgpt_c: error: out of memory: cannot allocate 524544 more nodes\n" if where == "step"
                   else "python -m microgpt_c: error: out of memory (the run needs more than the machine or its "
                        "limits give)\n")
    assert Run.load(ck).step == 2 and sorted(os.listdir(tmp_path)) == ["ck.npz"]


@pytest.mark.parametrize("args, says", [
    (["--n-head", "3"], "--n-embd 16 is not a multiple of --n-head 3"),
    (["--data", "/dev/null"], "/dev/null: a device, not a regular file"),
    (["--steps", "0"], "--steps must be 1 or more to time a step, not 0"),
    (["--python-steps", "0"], "--python-steps must be 1 or more, not 0"),
    (["--engines", "c:exact", "--n-embd", str(2**20)], "the run needs "),
    (["--engines", "c:fast,torch:eager"], "the torch engine needs torch: pip install torch"),
])
def test_bench_errors_are_one_line_before_any_worker(capsys, monkeypatch, args, says):
    import importlib.util
    from microgpt_c import bench
    find_spec = importlib.util.find_spec  # torch as if not installed, whether it is or not
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else find_spec(name, *a))
    workers = []
    monkeypatch.setattr(bench, "run_worker", lambda *a: workers.append(a))
    msg = one_line_error(*run_main("bench", *args), prog=BENCH)
    assert msg.startswith(says), msg
    assert workers == []


def test_a_failing_worker_shows_its_own_reason(capsys, monkeypatch):
    """A learning rate of 1e308 overflows in the first steps: only a worker
    finds that out, and its reason is what bench says."""
    monkeypatch.setenv("PYTHONPATH", REPO)  # the workers run this checkout's code
    status, out, err = run_main("bench", "--engines", "c:fast,c:exact", "--lr", "1e308", "--steps", 5)
    progress, error = err.splitlines(True)  # the worker's start, then the one line that ends it
    assert progress == f"{BENCH}: c:fast ...\n"
    msg = one_line_error(status, out, error, prog=BENCH)
    assert re.fullmatch(r"the c:fast run failed: \w+ made a non-finite number \((node|position) \d+: .*\)", msg), msg


@pytest.mark.parametrize("command", ["train", "sample", "bench"])
def test_every_flag_shows_its_default(command):
    import argparse
    p = parser(command)
    shown = [a for a in p._actions if a.help != argparse.SUPPRESS and not a.required
             and a.nargs != 0]  # --help and --version take no value
    assert len(shown) >= 5
    for a in shown:
        assert "(default: " in p._get_formatter()._expand_help(a), a.option_strings


@pytest.mark.parametrize("columns, terminal, widest", [("120", 100, 118), ("abc", 100, 98), ("-5", None, 78),
                                                      ("", None, 78)])
def test_help_is_as_wide_as_shutil_would_make_it(capsys, monkeypatch, columns, terminal, widest):
    """The help's width is shutil.get_terminal_size's, found without shutil:
    COLUMNS if it is a positive number, else the terminal's, else 80 (less 2)."""
    def terminal_size(fd):
        if terminal is None:
            raise OSError("not a terminal")
        return os.terminal_size((terminal, 24))

    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(os, "get_terminal_size", terminal_size)
    status, out, err = run_main("--help")
    assert status == 0 and widest - 12 < max(map(len, out.splitlines())) <= widest


def test_usage_shows_the_subcommands_and_mode_says_resume(capsys):
    status, out, err = run_main("--help")
    assert status == 0 and err == ""
    usage = out[:out.index("\n\n")]
    assert usage.startswith("usage: python -m microgpt_c [options]")
    assert "\n       python -m microgpt_c sample --load PATH [options]" in usage
    assert "\n       python -m microgpt_c bench [options]" in usage
    mode = next(a for a in parser("train")._actions if "--mode" in a.option_strings)
    assert "with --resume, the checkpoint's mode" in mode.help


def test_help_lists_each_command_on_its_own_line():
    from microgpt_c.cli import COMMANDS
    status, out, err = run_main("--help")
    described = out[out.index("\n\n") + 2:out.index("\noptions:")]
    assert {"sample", "attention", "bench", "bench value", "check", "trace"} < set(COMMANDS)
    for command in COMMANDS:
        assert re.search(rf"^  {command} +\w", described, re.M), command
        if command != "train":  # the main job's usage line has no command word
            assert f"\n       python -m microgpt_c {command} " in out[:out.index("\n\n")]  # and in the usage


def test_commands_are_argparse_subparsers_filled_in_when_chosen():
    """Each command is a subparser of one parser; only the chosen one has its
    flags, and only its module is imported (the main job imports no other)."""
    import argparse
    from microgpt_c.__main__ import parsers
    from microgpt_c.cli import COMMANDS
    top, module, p = parsers("sample")
    commands = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    assert list(commands.choices) == list(COMMANDS) and commands.choices["sample"] is p
    assert "--load" in p._option_string_actions and "--steps" not in commands.choices["train"]._option_string_actions
    modules = sorted(m for m, _, _ in COMMANDS.values())
    code = ("import sys; from microgpt_c.__main__ import parse; parse(['--steps', '1'])\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[-1] in {modules!r}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['microgpt_c.train']"


def test_the_main_job_answers_to_train_too():
    (status, out, err), (status2, out2, err2) = run_main("train", *SMALL_ARGS), run_main(*SMALL_ARGS)
    assert (status, err) == (status2, err2) == (0, "")
    assert result_lines(out.splitlines()) == result_lines(out2.splitlines()) and "sample  1:" in out


@pytest.mark.parametrize("args, says", [
    (["bench", "--steps", "5", "value"], "unrecognized arguments: value"),
    (["sample", "--load", "x", "--bogus"], "unrecognized arguments: --bogus"),
    (["bench", "value", "--n-embd", "8"], "unrecognized arguments: --n-embd 8")])
def test_a_flag_the_command_does_not_take_is_its_one_line(args, says):
    prog = "python -m microgpt_c " + ("bench value" if args[:2] == ["bench", "value"] else args[0])
    assert one_line_error(*run_main(*args), prog=prog) == says


def test_bench_workers_time_the_run_the_flags_describe(tmp_path):
    """bench passes each worker the settings and --data it was given."""
    data = tmp_path / "words.txt"
    data.write_text("abc\nbcd\ncab\nddd\n")
    args = ["--steps", "3", "--n-embd", "8", "--n-head", "2", "--lr", "0.05", "--seed", "7"]
    status, out, err = run_main("bench", "--engines", "c:exact", "--data", data, "--json", tmp_path / "b.json", *args)
    assert status == 0, err
    run = Run(microgpt_c.Config(n_embd=8, n_head=2), docs=["abc", "bcd", "cab", "ddd"], steps=3, lr=0.05, seed=7)
    assert json.loads((tmp_path / "b.json").read_text())[0]["losses"] == [run.train_step() for _ in range(3)]


def test_help_groups_say_what_resume_takes():
    """The model's sizes cannot be given with --resume; --steps can, and is
    listed with the run's settings, whose group says so."""
    groups = {g.title: g for g in parser("train")._action_groups}
    flags = {title: [s for a in g._group_actions for s in a.option_strings] for title, g in groups.items()}
    assert {"engine", "model size", "the run", "checkpoints", "output"} <= set(groups)
    assert flags["model size"] == ["--n-layer", "--n-embd", "--n-head", "--block-size"]
    assert "not with --resume" in groups["model size"].description
    assert "--steps" in flags["the run"] and "only --steps" in groups["the run"].description
    assert {"--save", "--save-every", "--resume"} == set(flags["checkpoints"])
    assert not set(flags["output"]) & set(flags["the run"] + flags["model size"])
    status, out, err = run_main("--resume", "x.npz", "--n-embd", 8)  # what the groups say is what happens
    assert "--n-embd cannot be given with it (only --steps" in one_line_error(status, out, err)


@pytest.mark.parametrize("torch", [False, True])
def test_mode_offers_the_torch_modes_only_with_torch(monkeypatch, torch):
    """Found by find_spec, without importing torch (which, faked here, would fail)."""
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: (object() if torch else None) if name == "torch" else find_spec(name, *args))
    mode = next(a for a in parser("train")._actions if "--mode" in a.option_strings)
    assert mode.choices == (["eager", "exact", "fast", "user"] if torch else ["exact", "fast"])
    assert ("eager:" in mode.help and "user:" in mode.help) == torch


@pytest.mark.parametrize("command", [[], ["sample"], ["bench"]])
def test_version(capsys, command):
    from importlib.metadata import version
    status, out, err = run_main(*command, "--version")
    assert (status, out, err) == (0, f"microgpt_c {version('microgpt_c')}\n", "")


def test_errors_name_settings_as_typed(tmp_path, capsys):
    """Flags in the CLI, parameter names in the Python API."""
    assert one_line_error(*run_main("--n-embd", 10)) == "--n-embd 10 is not a multiple of --n-head 4"
    with pytest.raises(ValueError, match=r"^n_embd 10 is not a multiple of n_head 4$"):
        microgpt_c.Config(n_embd=10)
    with pytest.raises(ValueError, match=r"^steps must be 0 or more, not -1$"):
        Run(steps=-1)
    run_main(*SMALL_ARGS, "--save", tmp_path / "ck.npz")
    msg = one_line_error(*run_main("sample", "--load", tmp_path / "ck.npz", "--prefix", "Z"),
                         prog=f"{PROG} sample")
    assert msg == "--prefix has characters not in the vocabulary: 'Z'"
    with pytest.raises(ValueError, match=r"^prefix has characters not in the vocabulary: 'Z'$"):
        Run.load(tmp_path / "ck.npz").sample(prefix="Z")


def test_plot_hint_is_the_readme_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    msg = one_line_error(*run_main(*SMALL_ARGS, "--plot", "loss.png"))
    command = re.fullmatch(r"--plot needs matplotlib: (pip install '\.\[plot\]') from a checkout, "
                           r"or pip install matplotlib", msg)
    assert command, msg
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert command[1] in readme
    assert "`microgpt_c`" in readme  # the console script


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP])
def test_a_stop_signal_saves_the_step_and_resume_goes_on_exactly(tmp_path, capsys, monkeypatch, sig):
    status, whole, err = run_main(*STOPPABLE)  # the run that never stopped
    assert (status, err) == (0, "")
    with open(tmp_path / "stderr", "w") as stderr:
        p = child(*STOPPABLE, "--save", "ck.npz", cwd=tmp_path, stdout=subprocess.PIPE, stderr=stderr)
        head = []
        while not (head and head[-1].startswith("step   20 /")):
            head.append(p.stdout.readline())
        # the child cannot finish before the signal: it blocks once the pipe is full, until this read
        p.send_signal(sig)
        out = "".join(head) + p.stdout.read()
        assert p.wait(timeout=600) == 128 + sig
    err = (tmp_path / "stderr").read_text()
    m = re.fullmatch(rf"python -m microgpt_c: interrupted by {sig.name} after step (\d+) of 5000: saved step \1 "
                     rf"to ck\.npz \(go on with --resume ck\.npz\)\n", err)
    assert m, err
    k = int(m[1])
    assert 20 <= k < 5000 and lines(out, "step ") == lines(whole, "step ")[:k] and lines(out, "sample ") == []
    monkeypatch.chdir(tmp_path)
    status, resumed, err = run_main("--resume", "ck.npz", "--num-samples", 5)
    assert (status, err) == (0, "")
    assert f"resumed from ck.npz at step {k} / 5000" in resumed
    assert lines(resumed, "step ") == lines(whole, "step ")[k:]
    assert lines(resumed, "sample ") == lines(whole, "sample ") and len(lines(whole, "sample ")) == 5


def test_a_long_document_encodes_only_the_block(tmp_path, capsys, monkeypatch):
    import random
    rng = random.Random(0)
    data = tmp_path / "long.txt"
    data.write_text("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(3_000_000)) + "\nemma\n")
    encoded, encode = [], Tokenizer.encode
    monkeypatch.setattr(Tokenizer, "encode", lambda self, doc: encoded.append(len(doc)) or encode(self, doc))
    status, out, err = run_main("--data", data, "--steps", 200, "--num-samples", 0)
    assert status == 0 and len(lines(out, "step ")) == 200
    assert err == f"{PROG}: 1 of 2 documents have 16 characters or more (--block-size): training reads their first 16 only\n"
    assert len(encoded) == 200 and sorted(set(encoded)) == [4, 16]  # block_size characters of the long one


def test_a_temperature_whose_reciprocal_overflows_is_refused(capsys):
    msg = one_line_error(*run_main("--temperature", "1e-310", *TINY_ARGS))
    assert msg.startswith("--temperature must be a positive number whose reciprocal is finite")
    with pytest.raises(ValueError, match="temperature"):
        Run(steps=1).sample(1, temperature=1e-310)


def test_weights_that_overflow_are_one_line_when_sampled(tmp_path, capsys):
    ck = tmp_path / "lr.npz"
    status, out, err = run_main("--lr", "1e308", "--steps", "1", "--save", ck, "--num-samples", "0")
    assert status == 0, err
    for args in (["sample", "--load", ck], ["sample", "--load", ck, "--engine", "python"], ["--resume", ck]):
        status, out, err = run_main(*args)
        assert status == 2 and "Traceback" not in err and err.count("\n") == 1, err


def test_negative_numbers_in_scientific_notation_are_numbers(capsys):
    status, out, err = run_main("--lr", "-1e-3", *TINY_ARGS)
    assert status == 0 and "step    3 /    3" in out, err


def test_a_full_output_device_is_one_line():
    r = subprocess.run([sys.executable, "-m", "microgpt_c", *TINY_ARGS], stdout=open("/dev/full", "w"),
                       stderr=subprocess.PIPE, text=True, cwd="/")
    assert r.returncode == 2 and r.stderr == f"{PROG}: error: cannot write the output: No space left on device\n"


def test_bench_json_is_checked_before_the_benchmark(tmp_path, capsys, monkeypatch):
    from microgpt_c import bench
    workers = []
    monkeypatch.setattr(bench, "run_worker", lambda *a: workers.append(a))
    for path, says in ((tmp_path, "names a directory" if str(tmp_path).endswith("/") else "not a regular file"),
                       (tmp_path / "no" / "x.json", "No such file or directory"), ("/dev/full", "not a regular file")):
        status, out, err = run_main("bench", "--json", path, "--engines", "c:fast", "--steps", "1")
        assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert workers == []


def test_bench_value_without_micrograd_is_one_line(capsys, monkeypatch):
    import importlib.util
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "micrograd" else find_spec(name, *a))
    status, out, err = run_main("bench", "value", "--engines", "c,micrograd")
    assert status == 2 and "micrograd is not installed" in err and err.count("\n") == 1, err


def test_an_inherited_ignore_is_kept(tmp_path):
    """Under nohup (SIGHUP ignored), a hang-up does not stop training."""
    code = ("import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_IGN); "
            "from microgpt_c.__main__ import main; from microgpt_c import Run\n"
            "import microgpt_c.run as r\n"
            "step = r.Run.train_step\n"
            "def hup(self):\n"
            "    if self.step == 2: os.kill(os.getpid(), signal.SIGHUP)\n"
            "    return step(self)\n"
            "r.Run.train_step = hup\n"
            f"main({[str(a) for a in TINY_ARGS]!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "step    3 /    3" in r.stdout, r.stderr


@pytest.mark.parametrize("args, says", [
    (["check", GOLDEN, "--temperature", "1e-310"], "--temperature must be a positive number whose reciprocal"),
    (["check", GOLDEN, "--temperature", "1e-308"], "cannot sample from this model: "),  # on the trained model
    (["check", "RUN", *OVERFLOW], "training stopped at step 2, document "),
    (["trace", "--step", "3", "--out", "t.npz", *OVERFLOW], "training stopped at step 2, document "),
    ([*OVERFLOW], "training stopped at step 2, document "),
])
def test_every_command_reports_what_the_runs_flags_make_in_one_line(tmp_path, capsys, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "RUN").write_text("step 1 / 3 | loss 3.3660\n")
    status, out, err = run_main(*args)
    if args[0] not in ("check", "trace"):  # the train command prints its lines before training
        out = ""
    prog = f"{PROG} {args[0]}" if args[0] in ("check", "trace") else PROG
    assert one_line_error(status, out, err, prog).startswith(says)
    assert not (tmp_path / "t.npz").exists()
