"""Checkpoints: a run's whole state in one numpy .npz file.

Arrays: each parameter matrix under the reference's name (wte, wpe, lm_head,
layer0.attn_wq, ...), Adam's moments (adam.m, adam.v, flat) and the steps done
(step). JSON text: the run's settings (config), the vocabulary (vocab), the
shuffled documents (docs, so resuming needs no data file) and the random
generator's state (rng). Loading checks all of it: any fault in the file is a
ValueError that says what is wrong."""
import contextlib
import json
import math
import os
import random
import zipfile
import zlib

import numpy as np

from .model import Config, Tokenizer, param_shapes

FORMAT = "microgpt_c checkpoint 1"
# The run's settings in 'config', each with the test its value must pass.
SETTINGS = {**{k: lambda x: type(x) is int for k in ("n_layer", "n_embd", "n_head", "block_size", "seed")},
            "steps": lambda x: type(x) is int and x >= 0,
            "lr": lambda x: type(x) in (int, float) and math.isfinite(x),
            "mode": lambda x: x in ("exact", "fast")}
TEXT = ("format", "config", "vocab", "docs", "rng")
# What numpy and zipfile raise on a file that is not an .npz, or a damaged one.
UNREADABLE = (EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def temporary(path):
    return f"{path}.{os.getpid()}.tmp"


def atomic_write(path, write):
    """write(f) to a temporary file beside path, then rename it to path: a
    crash at any moment leaves the old file or the new one, never a mix."""
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_writable(path):
    """A ValueError now, rather than an OSError after training, if path
    cannot be written."""
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a directory")
    try:
        open(temporary(path), "wb").close()
        os.remove(temporary(path))
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror}") from None


def save(run, path):
    flat, arrays = run.E.param_values(), {}
    for name, (rows, cols) in param_shapes(run.cfg, run.tok.vocab_size).items():
        arrays[name], flat = flat[:rows * cols].reshape(rows, cols), flat[rows * cols:]
    cfg = run.cfg
    settings = dict(n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head, block_size=cfg.block_size,
                    steps=run.steps, lr=run.adam.lr, seed=run.seed, mode=run.E.mode)
    for key, value in zip(TEXT[1:], (settings, run.tok.chars, run.docs, run.rng.getstate())):
        arrays[key] = np.array(json.dumps(value))
    arrays.update({"format": np.array(FORMAT), "adam.m": run.adam.m, "adam.v": run.adam.v,
                   "step": np.array(run.step)})
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def load(path):
    """The checkpoint at path, checked, as a dict: cfg (a Config), steps, lr,
    seed, mode, docs, rng (a state for Random.setstate), step, params (flat),
    m and v."""
    def bad(what):
        return ValueError(f"{path}: not a valid microgpt_c checkpoint: {what}")

    try:
        with open(path, "rb") as f:
            if not zipfile.is_zipfile(f):  # (numpy would try it as a pickle)
                raise zipfile.BadZipFile("not a complete zip archive")
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except OSError as e:
        raise ValueError(f"{path}: {e.strerror or e}") from None
    except UNREADABLE as e:
        raise bad(f"cannot read it as an .npz file ({' '.join(str(e).split()) or type(e).__name__})") from None

    def text(key):
        a = arrays.get(key)
        if a is None or a.shape != () or a.dtype.kind != "U":
            raise bad(f"no text {key!r}" if key != "format" else "no format marker")
        if key == "format":
            return a.item()
        try:
            return json.loads(a.item())
        except ValueError as e:
            raise bad(f"{key!r} is not JSON ({e})") from None

    if text("format") != FORMAT:
        raise bad(f"format {text('format')!r}, expected {FORMAT!r}")
    s, vocab, docs, rng = (text(k) for k in TEXT[1:])
    if not isinstance(s, dict) or set(s) != set(SETTINGS):
        raise bad(f"'config' must have exactly the keys {', '.join(sorted(SETTINGS))}")
    wrong = [k for k in sorted(SETTINGS) if not SETTINGS[k](s[k])]
    if wrong:
        raise bad(f"'config' has bad values: {', '.join(f'{k} {s[k]!r}' for k in wrong)}")
    try:
        cfg = Config(s["n_layer"], s["n_embd"], s["n_head"], s["block_size"])
    except ValueError as e:
        raise bad(f"'config': {e}") from None
    if not isinstance(docs, list) or not docs or not all(isinstance(d, str) and d for d in docs):
        raise bad("'docs' must be a list of non-empty strings")
    tok = Tokenizer(docs)
    if vocab != tok.chars:
        raise bad("'vocab' is not the sorted characters of 'docs'")
    try:
        version, state, gauss_next = rng
        if gauss_next is not None and not (type(gauss_next) is float and math.isfinite(gauss_next)):
            raise ValueError
        rng = (version, tuple(state), gauss_next)
        random.Random().setstate(rng)
    except (TypeError, ValueError, OverflowError):
        raise bad("'rng' is not a state of Python's random generator") from None

    shapes = param_shapes(cfg, tok.vocab_size)
    num_params = sum(r * c for r, c in shapes.values())
    shapes.update({"adam.m": (num_params,), "adam.v": (num_params,)})
    missing = [k for k in (*shapes, "step") if k not in arrays]
    extra = sorted(set(arrays) - set(shapes) - {"step", *TEXT})
    if missing or extra:
        raise bad("; ".join(f"{what} arrays: {', '.join(keys)}"
                            for what, keys in (("missing", missing), ("unexpected", extra)) if keys))
    for name, shape in shapes.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != np.float64:
            raise bad(f"{name!r} is {a.dtype} {a.shape}, expected float64 {shape}")
        if not np.isfinite(a).all():
            raise bad(f"{name!r} has non-finite values")
    if (arrays["adam.v"] < 0).any():
        raise bad("'adam.v' has negative values")
    step = arrays["step"]
    if step.shape != () or step.dtype.kind not in "iu" or not 0 <= step <= s["steps"]:
        raise bad(f"'step' must be an integer from 0 to the schedule's {s['steps']} steps")
    return {"cfg": cfg, "steps": s["steps"], "lr": s["lr"], "seed": s["seed"], "mode": s["mode"], "docs": docs,
            "rng": rng, "step": int(step), "m": arrays["adam.m"], "v": arrays["adam.v"],
            "params": np.concatenate([arrays[name].ravel() for name in param_shapes(cfg, tok.vocab_size)])}
