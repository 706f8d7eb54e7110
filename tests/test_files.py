"""Files and checkpoints: resuming continues the run bit for bit, the file
holds what it says under the reference's names, writes are atomic, any
damaged or foreign file is a ValueError that says what is wrong; every path
is checked before the work (outputs never clobber an input, follow symlinks,
refuse what is not a regular file), every input is read under a bound,
documents a terminal would not show as they are are refused."""
import io
import json
import os
import random
import socket
import stat
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from conftest import DEFAULT, DOCS, PROG, SMALL_ARGS, TINY, TINY_ARGS, bits, one_line_error, run_main

from microgpt_c import Run, load_docs
from microgpt_c.model import param_shapes
from microgpt_c.registry import ENGINES


def state(run):
    return bits(run.E.param_values()), bits(run.adam.m), bits(run.adam.v), run.step


@pytest.mark.parametrize("cfg,steps,mode,saved_on,resumed_on", [
    (DEFAULT, 60, "exact", "c", "c"),
    (DEFAULT, 60, "fast", "c", "c"),
    (TINY, 6, "exact", "python", "python"),
    (TINY, 6, "exact", "c", "python"),  # the engines are bit-identical, so a checkpoint moves between them
], ids=["c-exact", "c-fast", "python", "c-to-python"])
def test_resume_is_bit_identical(tmp_path, cfg, steps, mode, saved_on, resumed_on):
    """Stop half-way, save, load, go on: the same losses, parameters, Adam
    moments and samples as the run that never stopped."""
    whole = Run(cfg, DOCS, seed=3, steps=steps, engine=saved_on, mode=mode)
    losses = whole.train()
    first = Run(cfg, DOCS, seed=3, steps=steps, engine=saved_on, mode=mode)
    head = [first.train_step() for _ in range(steps // 2)]
    first.save(tmp_path / "half.npz")
    resumed = Run.load(tmp_path / "half.npz", engine=resumed_on, mode=mode)
    assert resumed.step == steps // 2
    tail = resumed.train()
    assert len(tail) == steps - steps // 2
    assert bits(head + tail) == bits(losses)
    assert state(resumed) == state(whole)
    assert resumed.sample(5) == whole.sample(5)


def test_checkpoint_holds_the_run_under_the_reference_names(tmp_path):
    run = Run(TINY, DOCS[:50], seed=5, steps=9, lr=0.02, mode="fast")
    run.train_step()
    run.save(tmp_path / "c.npz")
    with np.load(tmp_path / "c.npz", allow_pickle=False) as z:
        a = {k: z[k] for k in z.files}
    shapes = param_shapes(TINY, run.tok.vocab_size)
    assert list(shapes)[:4] == ["wte", "wpe", "lm_head", "layer0.attn_wq"]
    assert set(a) == set(shapes) | {"adam.m", "adam.v", "step", "format", "config", "vocab", "docs", "rng"}
    flat = np.concatenate([a[name].ravel() for name in shapes])
    assert all(a[name].shape == shape and a[name].dtype == np.float64 for name, shape in shapes.items())
    assert bits(flat) == bits(run.E.param_values())
    assert bits(a["adam.m"]) == bits(run.adam.m) and bits(a["adam.v"]) == bits(run.adam.v)
    assert int(a["step"]) == 1
    assert json.loads(a["config"].item()) == {"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 6, "steps": 9,
                                              "lr": 0.02, "seed": 5, "decay_steps": 0, "val_docs": 0, "mode": "fast"}
    assert json.loads(a["vocab"].item()) == run.tok.chars
    assert json.loads(a["docs"].item()) == run.docs != DOCS[:50]  # the shuffled order
    version, mt, gauss_next = json.loads(a["rng"].item())
    assert (version, tuple(mt), gauss_next) == run.rng.getstate()


def test_a_failed_write_leaves_the_old_checkpoint(tmp_path, monkeypatch):
    """A write that dies half-way (here: an error after some bytes) leaves the
    previous checkpoint whole and no temporary file behind."""
    run = Run(TINY, DOCS, steps=4)
    run.train_step()
    path = tmp_path / "c.npz"
    run.save(path)
    before = path.read_bytes()
    run.train_step()

    def dies(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", dies)
    with pytest.raises(OSError, match="No space"):
        run.save(path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.npz"]
    monkeypatch.undo()
    assert Run.load(path).step == 1


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    """The arrays of a valid checkpoint, to damage one thing at a time."""
    path = tmp_path_factory.mktemp("good") / "good.npz"
    run = Run(TINY, DOCS[:200], steps=5)
    run.train_step()
    run.save(path)
    with np.load(path, allow_pickle=False) as z:
        return path, {k: z[k] for k in z.files}


def edited(arrays, **changes):
    out = {k: v for k, v in arrays.items() if k not in changes or changes[k] is not None}
    out.update({k: v for k, v in changes.items() if v is not None})
    return out


def text(value):
    return np.array(json.dumps(value))


def config(**changes):
    return text({"n_layer": 1, "n_embd": 8, "n_head": 2, "block_size": 6, "steps": 5, "lr": 0.01, "seed": 42,
                 "mode": "exact", **changes})


def damaged_files(good_path, a):
    """name -> (write(path), the message it must give)."""
    raw = good_path.read_bytes()
    flipped = bytearray(raw)
    flipped[len(raw) // 3: len(raw) // 3 + 64] = bytes(64)
    wte, vocab = a["wte"], len(a["wte"])

    def npz(**changes):
        return lambda p: np.savez(p, **edited(a, **changes))

    def npy(p):
        with open(p, "wb") as f:  # a path would get .npy appended
            np.save(f, wte)

    return {
        "empty": (lambda p: p.write_bytes(b""), "not a complete zip archive"),
        "text": (lambda p: p.write_text("emma\nolivia\n"), "not a complete zip archive"),
        "truncated": (lambda p: p.write_bytes(raw[: len(raw) // 2]), "not a complete zip archive"),
        "zeroed bytes": (lambda p: p.write_bytes(bytes(flipped)), "cannot read it as an .npz"),
        "npy": (npy, "not a complete zip archive"),
        "foreign npz": (lambda p: np.savez(p, weights=wte), "an unexpected member 'weights.npy'"),
        "foreign member": (npz(**{"weights": wte}), "an unexpected member 'weights.npy'"),
        "pickled array": (lambda p: np.savez(p, **edited(a, docs=np.array([{"a": 1}], dtype=object))),
                          "cannot read it as an .npz"),
        "other format": (npz(format=np.array("microgpt_c checkpoint 99")), "format 'microgpt_c checkpoint 99'"),
        "missing array": (npz(wte=None), "missing arrays: wte"),
        "extra array": (npz(**{"layer1.attn_wq": wte}), "unexpected arrays: layer1.attn_wq"),
        "wrong shape": (npz(wte=wte[:, :4]), f"'wte' is float64 ({vocab}, 4), expected float64 ({vocab}, 8)"),
        "wrong dtype": (npz(wte=wte.astype(np.float32)), "'wte' is float32"),
        "nan param": (npz(wpe=np.full_like(a["wpe"], np.nan)), "'wpe' has non-finite values"),
        "inf moment": (npz(**{"adam.m": np.full_like(a["adam.m"], np.inf)}), "'adam.m' has non-finite values"),
        "negative v": (npz(**{"adam.v": -a["adam.v"] - 1}), "'adam.v' has negative values"),
        "moment length": (npz(**{"adam.v": a["adam.v"][1:]}), "'adam.v' is float64"),
        "bad json": (npz(config=np.array("{not json")), "'config' is not JSON"),
        "config not text": (npz(config=np.array(3.0)), "no text 'config'"),
        "config keys": (npz(config=text({"n_layer": 1})), "'config' must have exactly the keys"),
        "config size": (npz(config=config(n_embd=7)), "'config': n_embd 7 is not a multiple of n_head 2"),
        "config type": (npz(config=config(steps="5", seed=1.5)), "'config': seed must be int, not 1.5"),
        "config lr": (npz(config=config(lr=float("nan"))), "'config': lr must be a finite number, not nan"),
        "config mode": (npz(config=config(mode="turbo", steps=-1)), "'config' has mode 'turbo', not one of eager, exact, fast, user"),
        "config shapes": (npz(config=config(n_embd=4)),
                          f"'wte' is float64 ({vocab}, 8), expected float64 ({vocab}, 4)"),
        "vocab": (npz(vocab=text(list("abc"))), "'vocab' is not the sorted characters of 'docs'"),
        "docs": (npz(docs=text("emma")), "'docs' must be a non-empty list of documents"),
        "empty doc": (npz(docs=text(["emma", ""])), "'docs'[1] must be a non-empty string"),
        "invisible doc": (npz(docs=text(["em\u202ema"])), "'docs'[0] has the invisible bidirectional"),
        "rng": (npz(rng=text([3, [1, 2, 3], None])), "'rng' is not a state"),
        "rng gauss": (npz(rng=text([3, list(random.Random(1).getstate()[1]), "x"])), "'rng' is not a state"),
        "step": (npz(step=np.array(6)), "'step' must be an integer from 0 to the schedule's 5 steps"),
        "step type": (npz(step=np.array(1.0)), "'step' must be an integer"),
        # a step the saver could not write back (it writes 64-bit integers): refused rather than resumed
        "step 2**64 - 1": (npz(config=config(steps=2**64 - 1), step=np.array(2**64 - 1, dtype=np.uint64)),
                           "'config': steps must be at most 9223372036854775807"),
    }


def test_damaged_or_foreign_files_are_clear_errors(tmp_path, good):
    good_path, arrays = good
    assert Run.load(good_path).step == 1  # the files below differ from this one only where named
    for name, (write, says) in damaged_files(good_path, arrays).items():
        path = tmp_path / f"{name.replace(' ', '_')}.npz"
        write(path)
        with pytest.raises(ValueError) as e:
            Run.load(path)
        message = str(e.value)
        assert message.startswith(f"{path}: ") and says in message, (name, message)
        assert "\n" not in message


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(ValueError, match="No such file"):
        Run.load(tmp_path / "nothing.npz")
    with pytest.raises(ValueError, match="a directory, not a regular file"):
        Run.load(tmp_path)


def test_python_engine_has_exact_mode_only(good):
    assert Run.load(good[0], engine="python").E.mode == "exact"
    assert Run.load(good[0], mode="fast").E.mode == "fast"
    with pytest.raises(ValueError, match="exact mode only"):
        Run.load(good[0], engine="python", mode="fast")


@pytest.mark.parametrize("engine", [name for name, info in ENGINES.items() if info.available()])
def test_state_is_a_snapshot(engine):
    """Training on after state() changes nothing in it: from_state resumes
    as the run itself went on, on every engine."""
    run = Run(TINY, DOCS[:50], steps=6, engine=engine)
    run.train_step()
    st = run.state()
    before = {k: bits(st[k]) for k in ("params", "m", "v")}
    loss = run.train_step()
    assert {k: bits(st[k]) for k in ("params", "m", "v")} == before
    assert bits(Run.from_state(st, engine).train_step()) == bits(loss)


def special_files(tmp_path):
    """A directory, a FIFO, a socket and a device (through a symlink), each at a path."""
    (tmp_path / "dir.png").mkdir()
    os.symlink("/dev/null", tmp_path / "dev.png")
    os.mkfifo(tmp_path / "fifo.png")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(tmp_path / "sock.png"))
    return {"a directory": tmp_path / "dir.png", "a FIFO": tmp_path / "fifo.png", "a socket": tmp_path / "sock.png",
            "a device": tmp_path / "dev.png"}, sock


def pipe(data):
    """The path of a pipe holding data, its writer closed (as --data <(grep ...) gives one)."""
    r, w = os.pipe()
    os.write(w, data)  # under a pipe's buffer: no reader needed yet
    os.close(w)
    return f"/dev/fd/{r}"


def rewrite(path, **members):
    """The checkpoint at path with these members replaced or added (raw bytes, stored)."""
    with zipfile.ZipFile(path) as z:
        old = {i.filename: z.read(i) for i in z.infolist()}
    old.update(members)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in old.items():
            z.writestr(name, data)


def without_numpy(*args, cwd):
    """The CLI in a process where importing numpy fails, as under a tight memory limit."""
    return subprocess.run([sys.executable, "-c", NO_NUMPY, *args], capture_output=True, text=True, cwd=cwd)


NO_NUMPY = "import sys; sys.modules['numpy'] = None; from microgpt_c.__main__ import main; main(sys.argv[1:])"


@pytest.mark.parametrize("flag", ["--save", "--plot"])
def test_output_path_refuses_anything_but_a_regular_file(tmp_path, capsys, flag):
    if flag == "--plot":
        pytest.importorskip("matplotlib")
    paths, sock = special_files(tmp_path)
    with sock:
        for kind, path in paths.items():
            before = os.stat(path)
            msg = one_line_error(*run_main(*SMALL_ARGS, flag, path))
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
        status, out, err = run_main(*SMALL_ARGS, "--save", link)
        assert (status, err) == (0, f"{PROG}: wrote the checkpoint {link} (step 2 of 2)\n"), err
        assert os.path.islink(link) and os.readlink(link) == target
        assert Run.load(link).step == 2 and Run.load(tmp_path / target).step == 2
    assert sorted(os.listdir(tmp_path / "real")) == ["ck.npz", "new.npz"]


def test_plot_follows_a_symlink(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    os.symlink("target.png", tmp_path / "loss.png")
    status, out, err = run_main(*SMALL_ARGS, "--plot", tmp_path / "loss.png")
    assert (status, err) == (0, f"{PROG}: wrote the loss plot {tmp_path / 'loss.png'}\n"), err
    assert os.path.islink(tmp_path / "loss.png")
    assert (tmp_path / "target.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_leading_byte_order_mark_is_not_text(tmp_path, capsys):
    plain, bom = tmp_path / "plain.txt", tmp_path / "bom.txt"
    plain.write_text("emma\nolivia\nava\n", encoding="utf-8")
    bom.write_text("emma\nolivia\nava\n", encoding="utf-8-sig")  # EF BB BF first
    assert bom.read_bytes()[:3] == b"\xef\xbb\xbf"
    assert load_docs(bom) == load_docs(plain) == ["emma", "olivia", "ava"]
    outs = [run_main(*SMALL_ARGS, "--data", path)[1] for path in (plain, bom)]
    assert "vocab size: 8\n" in outs[0]  # a, e, i, l, m, o, v and BOS
    assert [ln for ln in outs[1].splitlines() if not ln.startswith("training time")] == \
        [ln for ln in outs[0].splitlines() if not ln.startswith("training time")]


@pytest.mark.parametrize("char", ["\x00", "\x1b", "\t", "\x7f", "\x85", "\x0c"])
def test_a_control_character_is_an_error_naming_its_line(tmp_path, capsys, char):
    data = tmp_path / "d.txt"
    data.write_text(f"emma\n\nol{char}ivia\nava\n", encoding="utf-8")
    msg = one_line_error(*run_main(*SMALL_ARGS, "--data", data))
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
    status, out, err = run_main(*args, *(["--num-samples", "2"] if "--resume" in args else TINY_ARGS))
    if says is None:  # --save may be the checkpoint it resumes from: that is how one goes on
        assert status == 0, err
        return
    assert one_line_error(status, out, err).startswith(says.replace("OUT.png", "out.png"))
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


def test_a_hard_link_to_the_data_is_the_data(tmp_path, capsys):
    data, link = tmp_path / "names.txt", tmp_path / "link.npz"
    data.write_text("anna\nbob\n")
    os.link(data, link)
    msg = one_line_error(*run_main("--data", data, "--save", link, *TINY_ARGS))
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


@pytest.mark.parametrize("args", [["--data", "/dev/zero"], ["--resume", "/dev/zero"],
                                  ["sample", "--load", "/dev/zero"], ["--data", "."]])
def test_special_files_are_refused_without_reading(tmp_path, capsys, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    status, out, err = run_main(*args)
    msg = one_line_error(status, out, err, prog=f"{PROG} sample" if args[0] == "sample" else PROG)
    assert "not a regular file or a pipe" in msg


def test_pipes_are_read_under_the_same_bound(tmp_path, capsys, monkeypatch):
    """--data <(...) and --data - (standard input) are read, in chunks, under
    the data file's bound; a pipe over it and a FIFO nobody writes to are one
    line, not a hang."""
    status, out, err = run_main("--data", pipe(b"anna\nbob\n"), *TINY_ARGS)
    assert status == 0 and "num docs: 2" in out, err
    r = subprocess.run([sys.executable, "-m", "microgpt_c", "--data", "-", *TINY_ARGS], input="anna\nbob\ncyd\n",
                       capture_output=True, text=True)
    assert r.returncode == 0 and "num docs: 3" in r.stdout, r.stderr
    monkeypatch.setattr("microgpt_c.text.TEXT_LIMIT", 100)
    assert "larger than the 100 bytes" in one_line_error(*run_main("--data", pipe(b"anna\n" * 100), *TINY_ARGS))
    os.mkfifo(tmp_path / "FIFO")
    assert "no documents" in one_line_error(*run_main("--data", tmp_path / "FIFO", *TINY_ARGS))


def test_a_file_over_the_bound_is_refused(tmp_path, monkeypatch):
    big = tmp_path / "big.txt"
    big.write_text("anna\n" * 1000)
    monkeypatch.setattr("microgpt_c.text.TEXT_LIMIT", 1000)
    with pytest.raises(ValueError, match="larger than"):
        load_docs(big)


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


@pytest.mark.parametrize("docs, says", [([], "non-empty list"), (["", "ab"], "non-empty string"),
                                        (["a\x1bb"], "control character"), (["ab\u2028cd"], "line separator"),
                                        (["ab\u202ecd"], "bidirectional"), (["x\u2067y"], "bidirectional")])
def test_documents_a_terminal_would_not_show_as_they_are_are_refused(tmp_path, capsys, docs, says):
    with pytest.raises(ValueError, match=says):
        Run(docs=docs, steps=1)
    if "non-empty" not in says:  # (a file's blank lines are no documents: dropped)
        data = tmp_path / "d.txt"
        data.write_text("\n".join(["anna"] + docs))
        msg = one_line_error(*run_main("--data", data, *TINY_ARGS))
        assert "line 2 has" in msg and says in msg


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


def test_without_numpy_a_checkpoint_is_one_line_before_training(tmp_path):
    Run(steps=1).save(tmp_path / "ck.npz")
    for args in (["sample", "--load", "ck.npz"], ["--save", "new.npz", *TINY_ARGS], ["--resume", "ck.npz", *TINY_ARGS[:2]],
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
