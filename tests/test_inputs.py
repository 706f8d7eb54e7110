"""What a second outside tester broke, fixed by class: every path checked
before the work (empty, a directory, the same file as an input or another
output), every input bounded before it is read, numbers refused where they
are parsed, states checked as strictly as checkpoints, invisible characters
kept out of documents, and one line for every failure."""
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import run_main
from test_hardening import PROG, one_line_error

from microgpt_c import Run, load_docs
from microgpt_c.cengine import CEngine

TINY = ["--steps", "3", "--n-embd", "8", "--n-head", "2", "--num-samples", "2"]


# -- paths: checked before anything runs; no file the user did not name as an output changes --

@pytest.mark.parametrize("args, says", [
    (["--data", "DATA", "--save", "DATA"], "--save DATA is the file --data names"),
    (["--save", "OUT.png", "--plot", "OUT.png"], "--plot OUT.png is the file --save names"),
    (["--resume", "CK", "--plot", "CK"], "--plot CK is the file --resume names"),
    (["--resume", "CK", "--save", "CK"], None),  # a run going on in its own checkpoint: named as the output
    (["--save", ""], "--save needs a path, not an empty string"),
    (["--plot", ""], "--plot needs a path, not an empty string"),
    (["--resume", ""], "--resume needs a path, not an empty string"),
    (["--data", ""], "--data needs a path, not an empty string"),
    (["--save", "newdir/"], "--save newdir/: names a directory"),
    (["--save", "missing/x.npz"], "cannot write missing/x.npz: No such file or directory"),
])
def test_output_paths_are_checked_before_anything_runs(tmp_path, capsys, monkeypatch, args, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "DATA").write_text("anna\nbob\n")
    half = Run(steps=2)
    half.train_step()
    half.save("CK")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    args = [a.replace("OUT.png", "out.png") for a in args]
    status, out, err = run_main(*args, *(["--num-samples", "2"] if "--resume" in args else TINY))
    if says is None:  # --save may be the checkpoint it resumes from: that is how one goes on
        assert status == 0, err
        return
    assert one_line_error(status, out, err).startswith(says.replace("OUT.png", "out.png"))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_hard_link_to_the_data_is_the_data(tmp_path, capsys):
    data, link = tmp_path / "names.txt", tmp_path / "link.npz"
    data.write_text("anna\nbob\n")
    os.link(data, link)
    msg = one_line_error(*run_main("--data", data, "--save", link, *TINY))
    assert "is the file --data names" in msg and data.read_text() == "anna\nbob\n"


def test_a_killed_saves_leftover_is_removed_by_the_next_save_and_nothing_else(tmp_path):
    """Only a temporary file this program names (its mark, a pid that is gone)
    is removed: a user's ck.npz.20240101.tmp stays, and a pid too large for
    the system is no error."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()  # a pid that is gone
    (tmp_path / f"run.npz.microgpt_c-{dead}.tmp").write_bytes(b"half a checkpoint")
    users = ["run.npz.20240101.tmp", f"run.npz.{dead}.tmp", "run.npz.99999999999999999999999.tmp",
             "run.npz.microgpt_c-99999999999999999999999.tmp", "run.npz.microgpt_c-007.tmp"]
    for name in users:
        (tmp_path / name).write_bytes(b"the user's")
    Run(steps=1).save(tmp_path / "run.npz")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["run.npz", *users])


# -- inputs: regular files only, bounded, checked by name and size before inflating --

@pytest.mark.parametrize("args", [["--data", "/dev/zero"], ["--resume", "/dev/zero"],
                                  ["sample", "--load", "/dev/zero"], ["--data", "."]])
def test_special_files_are_refused_without_reading(tmp_path, capsys, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(*args)
    msg = one_line_error(status, out, err, prog=f"{PROG} sample" if args[0] == "sample" else PROG)
    assert "not a regular file or a pipe" in msg


def pipe(data):
    """The path of a pipe holding data, its writer closed (as --data <(grep ...) gives one)."""
    r, w = os.pipe()
    os.write(w, data)  # under a pipe's buffer: no reader needed yet
    os.close(w)
    return f"/dev/fd/{r}"


def test_pipes_are_read_under_the_same_bound(tmp_path, capsys, monkeypatch):
    """--data <(...) and --data - (standard input) are read, in chunks, under
    the data file's bound; a pipe over it and a FIFO nobody writes to are one
    line, not a hang."""
    status, out, err = run_main("--data", pipe(b"anna\nbob\n"), *TINY)
    assert status == 0 and "num docs: 2" in out, err
    r = subprocess.run([sys.executable, "-m", "microgpt_c", "--data", "-", *TINY], input="anna\nbob\ncyd\n",
                       capture_output=True, text=True)
    assert r.returncode == 0 and "num docs: 3" in r.stdout, r.stderr
    monkeypatch.setattr("microgpt_c.text.TEXT_LIMIT", 100)
    assert "larger than the 100 bytes" in one_line_error(*run_main("--data", pipe(b"anna\n" * 100), *TINY))
    os.mkfifo(tmp_path / "FIFO")
    assert "no documents" in one_line_error(*run_main("--data", tmp_path / "FIFO", *TINY))


def test_a_file_over_the_bound_is_refused(tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    big.write_text("anna\n" * 1000)
    monkeypatch.setattr("microgpt_c.text.TEXT_LIMIT", 1000)
    with pytest.raises(ValueError, match="larger than"):
        load_docs(big)


def rewrite(path, **members):
    """The checkpoint at path with these members replaced or added (raw bytes, stored)."""
    with zipfile.ZipFile(path) as z:
        old = {i.filename: z.read(i) for i in z.infolist()}
    old.update(members)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in old.items():
            z.writestr(name, data)


def test_a_checkpoint_member_is_checked_before_it_is_inflated(tmp_path):
    ck = tmp_path / "ck.npz"
    Run(steps=1).save(ck)
    rewrite(ck, **{"extra.npy": b"\0" * (64 << 20)})  # 64 MiB of zeros packs to ~64 KB
    with pytest.raises(ValueError, match="unexpected member 'extra.npy'"):
        Run.load(ck)
    Run(steps=1).save(ck)
    buf = io.BytesIO()
    np.save(buf, np.zeros(8 << 20))  # a bomb under an expected name
    rewrite(ck, **{"wte.npy": buf.getvalue()})
    with pytest.raises(ValueError, match="would inflate"):
        Run.load(ck)


def test_deeply_nested_json_is_one_line(tmp_path):
    ck = tmp_path / "ck.npz"
    Run(steps=1).save(ck)
    buf = io.BytesIO()
    np.save(buf, np.array("[" * 100_000 + "]" * 100_000))
    rewrite(ck, **{"config.npy": buf.getvalue()})
    with pytest.raises(ValueError, match="nested too deeply"):
        Run.load(ck)


# -- numbers: refused where they are parsed, in the CLI and the API --

def test_a_temperature_whose_reciprocal_overflows_is_refused(capsys):
    msg = one_line_error(*run_main("--temperature", "1e-310", *TINY))
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
    status, out, err = run_main("--lr", "-1e-3", *TINY)
    assert status == 0 and "step    3 /    3" in out, err


def test_a_full_output_device_is_one_line():
    r = subprocess.run([sys.executable, "-m", "microgpt_c", *TINY], stdout=open("/dev/full", "w"),
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


# -- the Python API: states, documents, shapes --

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


@pytest.mark.parametrize("docs, says", [([], "non-empty list"), (["", "ab"], "non-empty string"),
                                        (["a\x1bb"], "control character"), (["ab\u2028cd"], "line separator"),
                                        (["ab\u202ecd"], "bidirectional"), (["x\u2067y"], "bidirectional")])
def test_documents_a_terminal_would_not_show_as_they_are_are_refused(tmp_path, capsys, docs, says):
    with pytest.raises(ValueError, match=says):
        Run(docs=docs, steps=1)
    if "non-empty" not in says:  # (a file's blank lines are no documents: dropped)
        data = tmp_path / "d.txt"
        data.write_text("\n".join(["anna"] + docs))
        msg = one_line_error(*run_main("--data", data, *TINY))
        assert "line 2 has" in msg and says in msg


def test_engine_shapes_are_checked():
    E = CEngine()
    P = E.create_params({"w": (4, 4)}, [0.1] * 16)
    x = E.linear((0, 4), P["w"])
    with pytest.raises(ValueError, match="as many values as keys"):
        E.attention(x, [x, x], [x], 2)
    with pytest.raises(ValueError, match="16 parameters"):
        E.set_param_values([0.0] * 15)
    with pytest.raises(ValueError, match="not finite"):
        E.set_param_values([float("nan")] * 16)
    from microgpt_c.model import Adam
    with pytest.raises(ValueError, match="moments"):
        E.adam_step(Adam(15, 0.01, 10), 0)


# -- signals and streaming --

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
            f"main({[str(a) for a in TINY]!r})")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "step    3 /    3" in r.stdout, r.stderr


def test_samples_stream_as_they_are_made():
    run = Run(steps=1)
    names = run.samples(10**9)
    first = [next(names) for _ in range(3)]
    assert len(first) == 3 and all(isinstance(n, str) for n in first)


# -- every command that takes the run's flags checks them, and reports what they make, in one line --

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "microgpt_seed42.txt")
OVERFLOW = ["--steps", "3", "--lr", "1e308"]  # the weights overflow at step 2


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


@pytest.mark.parametrize("out, says", [("data.txt", "--out data.txt is the file --data names"),
                                       ("link.txt", "--out link.txt is the file --data names"),
                                       ("newdir/", "--out newdir/: names a directory")])
def test_traces_output_is_checked_as_saves_is(tmp_path, capsys, monkeypatch, out, says):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data.txt").write_text("anna\nbob\n")
    os.symlink("data.txt", tmp_path / "link.txt")
    status, stdout, err = run_main("trace", "--step", "1", "--out", out, "--data", "data.txt", "--steps", "1")
    assert one_line_error(status, stdout, err, f"{PROG} trace").startswith(says)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.txt", "link.txt"]
    assert (tmp_path / "data.txt").read_text() == "anna\nbob\n"


# -- what saving and loading need is there before the work starts --

NO_NUMPY = "import sys; sys.modules['numpy'] = None; from microgpt_c.__main__ import main; main(sys.argv[1:])"


def without_numpy(*args, cwd):
    """The CLI in a process where importing numpy fails, as under a tight memory limit."""
    return subprocess.run([sys.executable, "-c", NO_NUMPY, *args], capture_output=True, text=True, cwd=cwd)


def test_without_numpy_a_checkpoint_is_one_line_before_training(tmp_path):
    Run(steps=1).save(tmp_path / "ck.npz")
    for args in (["sample", "--load", "ck.npz"], ["--save", "new.npz", *TINY], ["--resume", "ck.npz", *TINY[:2]],
                 ["trace", "--step", "1", "--out", "t.npz", "--steps", "1"]):
        r = without_numpy(*args, cwd=tmp_path)
        prog = PROG + (f" {args[0]}" if args[0] in ("sample", "trace") else "")
        assert "needs numpy, which cannot be imported here" in one_line_error(r.returncode, r.stdout, r.stderr, prog)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz"]


def test_numpys_page_of_advice_is_one_line(monkeypatch):
    """numpy's ImportError (as under ulimit -v 61000) is a page of advice: the line is its last, the reason."""
    from microgpt_c.cli import require_numpy

    class Refuse:
        def find_spec(self, name, *args):
            if name == "numpy":
                raise ImportError("\nIMPORTANT: PLEASE READ THIS\n\nOriginal error was: failed to map segment\n")

    monkeypatch.delitem(sys.modules, "numpy")
    monkeypatch.setattr(sys, "meta_path", [Refuse(), *sys.meta_path])
    with pytest.raises(ValueError) as e:
        require_numpy("trace")
    assert str(e.value) == "trace needs numpy, which cannot be imported here: Original error was: failed to map segment"


@pytest.mark.parametrize("member", ["wte.npy", "config.npy", "step.npy"])
def test_a_member_that_is_not_npy_data_is_one_line(tmp_path, capsys, member):
    ck = tmp_path / "ck.npz"
    Run(steps=1).save(ck)
    rewrite(ck, **{member: b"" if member == "wte.npy" else b"some text"})
    with pytest.raises(ValueError, match=f"member '{member}' is not numpy array data"):
        Run.load(ck)
    assert "is not numpy array data" in one_line_error(*run_main("sample", "--load", ck), prog=f"{PROG} sample")


def test_a_step_count_past_what_a_checkpoint_holds_is_refused(tmp_path, capsys):
    """Steps are at most 2**63 - 1 (a checkpoint's 64-bit step): 1 and 400
    zeros is one line (not the progress line's OverflowError on a terminal),
    and a run at the last step saves a checkpoint that reads back."""
    with pytest.raises(ValueError, match="steps must be at most 9223372036854775807"):
        Run(steps=10**400)  # (first: before the bound, the command below trained without end)
    assert "--steps must be at most 9223372036854775807" in one_line_error(*run_main("--steps", "1" + "0" * 400))
    run = Run(steps=1)
    run.train_step()
    state = {**run.state(), "step": 2**63 - 1}
    state["schedule"] = type(run.schedule)(run.schedule.seed, 2**63 - 1, run.schedule.lr, 1)
    Run.from_state(state).save(tmp_path / "last.npz")
    assert Run.load(tmp_path / "last.npz").step == 2**63 - 1
    with pytest.raises(ValueError):
        run.extend(2**64 - 1)
