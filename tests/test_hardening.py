"""What an outside tester broke (output paths, memory, signals, long
documents, odd text, bench's errors, help): each case as a user meets it,
in-process where it can be (main(argv)); in a child process only where a
signal, an exit status or a memory limit must be real."""
import os
import re
import resource
import signal
import socket
import stat
import subprocess
import sys

import pytest
from conftest import run_main

import microgpt_c
from microgpt_c import Run, Tokenizer, load_docs

PROG = "python -m microgpt_c"
SMALL = ["--steps", "2", "--n-embd", "8", "--n-head", "2", "--num-samples", "1"]


def one_line_error(status, out, err, prog=PROG):
    """The CLI's contract for bad input: status 2, one line on stderr, nothing
    on stdout (it is checked before training). Returns the message."""
    assert (status, out) == (2, ""), (status, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"{prog}: error: "), err
    return err[len(f"{prog}: error: "):-1]


# -- 1. --save and --plot replace a regular file or nothing, and follow symlinks --

def special_files(tmp_path):
    """A directory, a FIFO, a socket and a device (through a symlink), each at a path."""
    (tmp_path / "dir.png").mkdir()
    os.symlink("/dev/null", tmp_path / "dev.png")
    os.mkfifo(tmp_path / "fifo.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.png"))
    return {"a directory": tmp_path / "dir.png", "a FIFO": tmp_path / "fifo.png", "a socket": tmp_path / "sock.png",
            "a device": tmp_path / "dev.png"}, sock


@pytest.mark.parametrize("flag", ["--save", "--plot"])
def test_output_path_refuses_anything_but_a_regular_file(tmp_path, capsys, flag):
    if flag == "--plot":
        pytest.importorskip("matplotlib")
    paths, sock = special_files(tmp_path)
    with sock:
        for kind, path in paths.items():
            before = os.stat(path)
            msg = one_line_error(*run_main(*SMALL, flag, path))
            assert msg == f"cannot write {path}: it is {kind}, not a regular file"
            after = os.stat(path)
            assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dev.png", "dir.png", "fifo.png", "sock.png"]  # no temporary left


def test_atomic_write_refuses_a_fifo_made_after_the_check(tmp_path):
    """The check before training is repeated where the file is written."""
    from microgpt_c.files import atomic_write, check_writable
    check_writable(tmp_path / "out")
    os.mkfifo(tmp_path / "out")
    with pytest.raises(OSError, match="it is a FIFO, not a regular file"):
        atomic_write(tmp_path / "out", lambda f: f.write(b"x"))
    assert stat.S_ISFIFO(os.stat(tmp_path / "out").st_mode) and os.listdir(tmp_path) == ["out"]


def test_save_follows_a_symlink(tmp_path, capsys):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "ck.npz").write_bytes(b"old")
    os.symlink("real/ck.npz", tmp_path / "link.npz")
    dangling = tmp_path / "dangling.npz"
    os.symlink("real/new.npz", dangling)  # a link to a file not yet there
    for link, target in ((tmp_path / "link.npz", "real/ck.npz"), (dangling, "real/new.npz")):
        status, out, err = run_main(*SMALL, "--save", link)
        assert (status, err) == (0, f"{PROG}: wrote the checkpoint {link} (step 2 of 2)\n"), err
        assert os.path.islink(link) and os.readlink(link) == target
        assert Run.load(link).step == 2 and Run.load(tmp_path / target).step == 2
    assert sorted(os.listdir(tmp_path / "real")) == ["ck.npz", "new.npz"]


def test_plot_follows_a_symlink(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    os.symlink("target.png", tmp_path / "loss.png")
    status, out, err = run_main(*SMALL, "--plot", tmp_path / "loss.png")
    assert (status, err) == (0, f"{PROG}: wrote the loss plot {tmp_path / 'loss.png'}\n"), err
    assert os.path.islink(tmp_path / "loss.png")
    assert (tmp_path / "target.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- 5. odd text: a byte order mark is not a character; control characters are an error naming the line --

def test_a_leading_byte_order_mark_is_not_text(tmp_path, capsys):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text("emma\nolivia\nava\n", encoding="utf-8")
    bom.write_text("emma\nolivia\nava\n", encoding="utf-8-sig")  # EF BB BF first
    assert bom.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_docs(bom) == load_docs(plain) == ["emma", "olivia", "ava"]
    outs = [run_main(*SMALL, "--data", path)[1] for path in (plain, bom)]
    assert "vocab size: 8\n" in outs[0]  # a, e, i, l, m, o, v and BOS
    assert [ln for ln in outs[1].splitlines() if not ln.startswith("training time")] == \
        [ln for ln in outs[0].splitlines() if not ln.startswith("training time")]


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\t", "\x7f", "\x85", "\x0c"])
def test_a_control_character_is_an_error_naming_its_line(tmp_path, capsys, char):
    data = tmp_path / "d.txt"
    data.write_text(f"emma\n\nol{char}ivia\nava\n", encoding="utf-8")
    msg = one_line_error(*run_main(*SMALL, "--data", data))
    assert msg == (f"{data}: line 3 has the control character {char!r} (U+{ord(char):04X}): "
                   f"documents are printable text")
    assert "\x1b" not in msg and "\x00" not in msg  # escaped, not sent raw to the terminal


def test_a_checkpoint_with_a_control_character_is_refused(tmp_path):
    Run(docs=["emma", "ava"], steps=1).save(tmp_path / "ck.npz")
    import numpy as np
    with np.load(tmp_path / "ck.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["docs"], arrays["vocab"] = np.array('["emma", "a\\u001bva"]'), np.array(
        '["\\u001b", "a", "e", "m", "v"]')
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"'docs'\[1\] has the control character '\\x1b' \(U\+001B\)"):
        Run.load(tmp_path / "bad.npz")


# -- 2. memory: a run that cannot fit is refused before it allocates; a late MemoryError is one line --

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(*args, cwd, limit=None, **kw):
    """python -m microgpt_c in a child process running this checkout's code,
    with an address-space limit of `limit` bytes if given."""
    def preexec():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    env = {**os.environ, "PYTHONPATH": REPO}
    return subprocess.Popen([sys.executable, "-m", "microgpt_c", *map(str, args)], cwd=cwd, env=env, text=True,
                            preexec_fn=preexec if limit else None, **kw)


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


def test_under_an_address_space_limit_a_run_too_big_is_one_line(tmp_path):
    limit = 700 * 2**20
    p = child("--n-embd", 1024, "--steps", 1, cwd=tmp_path, limit=limit, stdout=subprocess.PIPE,
              stderr=subprocess.PIPE)
    out, err = p.communicate(timeout=600)
    assert (p.returncode, out) == (2, ""), err
    assert re.fullmatch(r"python -m microgpt_c: error: the run needs about 1\.\d GiB \(12,654,592 parameters with "
                        r"Adam's moments, 4,197,904 numbers for a step of 16 positions\), more than the [\d.]+ MiB "
                        r"of room under the address-space limit \(RLIMIT_AS\)\n", err), err
    p = child(*SMALL, cwd=tmp_path, limit=limit, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
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
    status, out, err = run_main(*SMALL, "--steps", 5, "--save", ck, "--save-every", 1)
    assert status == 2 and "Traceback" not in err, err
    assert err == ("python -m microgpt_c: error: out of memory: cannot allocate 524544 more nodes\n" if where == "step"
                   else "python -m microgpt_c: error: out of memory (the run needs more than the machine or its "
                        "limits give)\n")
    assert Run.load(ck).step == 2 and sorted(os.listdir(tmp_path)) == ["ck.npz"]


# -- 6. bench: one line, status 2, the real reason; checked before any worker starts --

BENCH = "python -m microgpt_c bench"


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


# -- 7. help and messages --

def parsers():
    from microgpt_c import bench
    from microgpt_c.sample import parser as sample_parser
    from microgpt_c.train import parser as train_parser
    return {"train": train_parser(), "sample": sample_parser(), "bench": bench.parser()}


@pytest.mark.parametrize("command", ["train", "sample", "bench"])
def test_every_flag_shows_its_default(command):
    import argparse
    p = parsers()[command]
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
    mode = next(a for a in parsers()["train"]._actions if "--mode" in a.option_strings)
    assert "with --resume, the checkpoint's mode" in mode.help


def test_help_lists_each_command_on_its_own_line():
    status, out, err = run_main("--help")
    described = out[out.index("\n\n") + 2:out.index("\noptions:")]
    for command in ("sample", "attention", "bench", "bench value", "check", "trace"):
        assert re.search(rf"^  {command} +\w", described, re.M), command
        assert f"python -m microgpt_c {command.split()[0]}" in out[:out.index("\n\n")]  # and in the usage


def test_help_groups_say_what_resume_takes():
    """The model's sizes cannot be given with --resume; --steps can, and is
    listed with the run's settings, whose group says so."""
    groups = {g.title: g for g in parsers()["train"]._action_groups}
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
    mode = next(a for a in parsers()["train"]._actions if "--mode" in a.option_strings)
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
    run_main(*SMALL, "--save", tmp_path / "ck.npz")
    msg = one_line_error(*run_main("sample", "--load", tmp_path / "ck.npz", "--prefix", "Z"),
                         prog=f"{PROG} sample")
    assert msg == "--prefix has characters not in the vocabulary: 'Z'"
    with pytest.raises(ValueError, match=r"^prefix has characters not in the vocabulary: 'Z'$"):
        Run.load(tmp_path / "ck.npz").sample(prefix="Z")


def test_plot_hint_is_the_readme_command(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib fails
    msg = one_line_error(*run_main(*SMALL, "--plot", "loss.png"))
    command = re.fullmatch(r"--plot needs matplotlib: (pip install '\.\[plot\]') from a checkout, "
                           r"or pip install matplotlib", msg)
    assert command, msg
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert command[1] in readme
    assert "`microgpt_c`" in readme  # the console script





# -- 3. SIGTERM and SIGHUP stop like Ctrl-C: the step finishes, is saved, one line, 128 + signal --

STOPPABLE = ["--steps", 5000, "--n-embd", 8, "--n-head", 2, "--num-samples", 5]  # 5,000 lines: more than a pipe holds


def lines(out, start):
    return [ln for ln in out.splitlines() if ln.startswith(start)]


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


# -- 4. a long document: only the block is encoded, so its length does not slow a step --

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
