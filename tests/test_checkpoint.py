"""Checkpoints: resuming continues the run bit for bit, the file holds what it
says under the reference's names, writes are atomic, and any damaged or
foreign file is a ValueError that says what is wrong."""
import json
import os
import random

import numpy as np
import pytest

from conftest import DEFAULT, DOCS, TINY, bits
from microgpt_c import Run
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
