"""Checkpoints: a run's whole state in one numpy .npz file.

Arrays: each parameter matrix under the reference's name (wte, wpe, lm_head,
layer0.attn_wq, ...), Adam's moments (adam.m, adam.v, flat) and the steps done
(step). JSON text: the run's settings (config), the vocabulary (vocab), the
shuffled documents (docs, so resuming needs no data file) and the random
generator's state (rng). Loading checks all of it: any fault in the file is a
ValueError that says what is wrong."""
import json
import math
import random
import zipfile
import zlib

import numpy as np

from .config import Config, Schedule, asdict, fields
from .files import atomic_write
from .model import param_shapes
from .registry import MODES
from .text import Tokenizer, control

FORMAT = "microgpt_c checkpoint 1"
# 'config' holds the fields of Config and Schedule, and the mode.
SETTINGS = (*(f.name for f in fields(Config)), *(f.name for f in fields(Schedule)), "mode")
TEXT = ("format", "config", "vocab", "docs", "rng")
# What numpy and zipfile raise on a file that is not an .npz, or a damaged one.
UNREADABLE = (EOFError, ValueError, RuntimeError, NotImplementedError, zipfile.BadZipFile, zlib.error)


def save(state, path):
    """Write a Run.state() to path, atomically."""
    cfg, tok, flat, arrays = state["cfg"], Tokenizer(state["docs"]), np.asarray(state["params"], np.float64), {}
    for name, (rows, cols) in param_shapes(cfg, tok.vocab_size).items():
        arrays[name], flat = flat[:rows * cols].reshape(rows, cols), flat[rows * cols:]
    settings = {**asdict(cfg), **asdict(state["schedule"]), "mode": state["mode"]}
    for key, value in zip(TEXT[1:], (settings, tok.chars, state["docs"], state["rng"])):
        arrays[key] = np.array(json.dumps(value))
    arrays.update({"format": np.array(FORMAT), "adam.m": np.asarray(state["m"]), "adam.v": np.asarray(state["v"]),
                   "step": np.array(state["step"])})
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def load(path):
    """The checkpoint at path, checked, as a Run.state(): cfg, schedule, mode,
    docs, rng (a state for Random.setstate), step, params (flat), m and v."""
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
    if s["mode"] not in MODES:
        raise bad(f"'config' has mode {s['mode']!r}, not one of {', '.join(MODES)}")
    try:
        cfg = Config(**{f.name: s[f.name] for f in fields(Config)})
        schedule = Schedule(**{f.name: s[f.name] for f in fields(Schedule)})
    except ValueError as e:
        raise bad(f"'config': {e}") from None
    if not isinstance(docs, list) or not docs or not all(isinstance(d, str) and d and not control(d) for d in docs):
        raise bad("'docs' must be a list of non-empty strings (no control characters)")
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
    if step.shape != () or step.dtype.kind not in "iu" or not 0 <= step <= schedule.steps:
        raise bad(f"'step' must be an integer from 0 to the schedule's {schedule.steps} steps")
    return {"cfg": cfg, "schedule": schedule, "mode": s["mode"], "docs": docs, "rng": rng, "step": int(step),
            "m": arrays["adam.m"], "v": arrays["adam.v"],
            "params": np.concatenate([arrays[name].ravel() for name in param_shapes(cfg, tok.vocab_size)])}
