"""Checkpoints: a run's whole state in one numpy .npz file.

Arrays: each parameter matrix under the reference's name (wte, wpe, lm_head,
layer0.attn_wq, ...), Adam's moments (adam.m, adam.v, flat) and the steps done
(step). JSON text: the run's settings (config), the vocabulary (vocab), the
shuffled documents (docs, so resuming needs no data file) and the random
generator's state (rng). Loading checks all of it: any fault in the file is a
ValueError that says what is wrong."""
import io
import json
import math
import random
import re
import zipfile
import zlib

import numpy as np

from .config import Config, Schedule, asdict, fields
from .files import CHECKPOINT_LIMIT, MiB, atomic_write, read_bounded
from .model import param_shapes
from .registry import MODES
from .text import Tokenizer, check_docs

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
                   "step": np.array(state["step"], dtype=np.int64)})  # Schedule's MAX_STEPS fits
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


# The members a checkpoint may hold (each an .npy file in the zip archive).
MEMBER = re.compile(r"(wte|wpe|lm_head|layer\d{1,6}\.(attn_w[qkvo]|mlp_fc[12])|adam\.[mv]|step|"
                    + "|".join(TEXT) + r")\.npy")
INFLATION = 64  # a member may inflate to at most this many times its packed size (and 1 MiB)


def members(data):
    """The arrays of the .npz archive in data, once every member has been
    checked by name and by the size it declares, before any is inflated."""
    def unreadable(e):
        return ValueError(f"cannot read it as an .npz file ({' '.join(str(e).split()) or type(e).__name__})")

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            infos = z.infolist()
    except UNREADABLE as e:
        raise unreadable(e) from None
    for info in infos:
        if not MEMBER.fullmatch(info.filename):
            raise ValueError(f"an unexpected member {info.filename!r}")
        if info.file_size > INFLATION * info.compress_size + MiB:
            raise ValueError(f"member {info.filename!r} would inflate {info.file_size:,} bytes from "
                             f"{info.compress_size:,}")
    total = sum(info.file_size for info in infos)
    if total > CHECKPOINT_LIMIT:
        raise ValueError(f"its members would inflate to {total:,} bytes")
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except UNREADABLE as e:
        raise unreadable(e) from None
    for k, a in arrays.items():
        if not isinstance(a, np.ndarray):  # numpy hands back the bytes of a member that is not .npy data
            raise ValueError(f"member {k + '.npy'!r} is not numpy array data")
    return arrays


def load(path):
    """The checkpoint at path, checked, as a Run.state(): cfg, schedule, mode,
    docs, rng (a state for Random.setstate), step, params (flat), m and v."""
    def bad(what):
        return ValueError(f"{path}: not a valid microgpt_c checkpoint: {what}")

    data = read_bounded(path, CHECKPOINT_LIMIT, "checkpoint")
    if not zipfile.is_zipfile(io.BytesIO(data)):  # (numpy would try it as a pickle)
        raise bad("cannot read it as an .npz file (not a complete zip archive)")
    try:
        arrays = members(data)
    except ValueError as e:
        raise bad(str(e)) from None

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
        except RecursionError:
            raise bad(f"{key!r} is nested too deeply") from None

    if text("format") != FORMAT:
        raise bad(f"format {text('format')!r}, expected {FORMAT!r}")
    s, vocab, docs, rng = (text(k) for k in TEXT[1:])
    cfg, schedule = settings(s, bad)
    try:
        check_docs(docs, "'docs'")
    except ValueError as e:
        raise bad(str(e)) from None
    if vocab != Tokenizer(docs).chars:
        raise bad("'vocab' is not the sorted characters of 'docs'")
    step = numbers(arrays, param_shapes(cfg, len(vocab) + 1), bad)
    state = {"cfg": cfg, "schedule": schedule, "mode": s["mode"], "docs": docs, "rng": rng, "step": step,
             "m": arrays["adam.m"], "v": arrays["adam.v"],
             "params": np.concatenate([arrays[name].ravel() for name in param_shapes(cfg, len(vocab) + 1)])}
    try:
        return check_state(state)
    except ValueError as e:
        raise bad(str(e)) from None


def settings(s, bad):
    """The checkpoint's 'config' text as (Config, Schedule); bad(what) makes the error."""
    if isinstance(s, dict):
        s.setdefault("decay_steps", 0)  # a checkpoint from before the setting: the decay was all the steps
        s.setdefault("val_docs", 0)  # and from before held-out documents
    if not isinstance(s, dict) or set(s) != set(SETTINGS):
        raise bad(f"'config' must have exactly the keys {', '.join(sorted(SETTINGS))}")
    if s["mode"] not in MODES:
        raise bad(f"'config' has mode {s['mode']!r}, not one of {', '.join(MODES)}")
    try:
        return tuple(kind(**{f.name: s[f.name] for f in fields(kind)}) for kind in (Config, Schedule))
    except ValueError as e:
        raise bad(f"'config': {e}") from None


def numbers(arrays, shapes, bad):
    """Checks the arrays a config of these parameter shapes needs (its
    parameters, Adam's moments, the step), and nothing else; returns the step."""
    num_params = sum(r * c for r, c in shapes.values())
    shapes = {**shapes, "adam.m": (num_params,), "adam.v": (num_params,)}
    missing = [k for k in (*shapes, "step") if k not in arrays]
    extra = sorted(set(arrays) - set(shapes) - {"step", *TEXT})
    if missing or extra:
        raise bad("; ".join(f"{what} arrays: {', '.join(keys)}"
                            for what, keys in (("missing", missing), ("unexpected", extra)) if keys))
    for name, shape in shapes.items():
        a = arrays[name]
        if a.shape != shape or a.dtype != np.float64:
            raise bad(f"{name!r} is {a.dtype} {a.shape}, expected float64 {shape}")
    step = arrays["step"]
    if step.shape != () or step.dtype.kind not in "iu":
        raise bad("'step' must be an integer")
    return int(step)


def check_state(state):
    """A run's state (Run.state(), or what load read) checked whole, as
    Run.from_state and load both need it: the settings, the documents, the
    random generator's state, the step within the schedule, and parameters
    and moments of the model's size, finite (v not negative). Returns it
    with rng as Random.setstate takes it and the arrays as float64 numpy
    arrays; a ValueError says what is wrong."""
    cfg, schedule, mode = state.get("cfg"), state.get("schedule"), state.get("mode")
    if not isinstance(cfg, Config) or not isinstance(schedule, Schedule):
        raise ValueError("'cfg' must be a Config and 'schedule' a Schedule")
    if mode not in MODES:
        raise ValueError(f"'mode' is {mode!r}, not one of {', '.join(MODES)}")
    check_docs(state.get("docs"), "'docs'")
    try:
        version, mt, gauss_next = state["rng"]
        if gauss_next is not None and not (type(gauss_next) is float and math.isfinite(gauss_next)):
            raise ValueError
        rng = (version, tuple(mt), gauss_next)
        random.Random().setstate(rng)
    except (KeyError, TypeError, ValueError, OverflowError):
        raise ValueError("'rng' is not a state of Python's random generator") from None
    step = state.get("step")
    if type(step) is not int or not 0 <= step <= schedule.steps:
        raise ValueError(f"'step' must be an integer from 0 to the schedule's {schedule.steps} steps")
    shapes = param_shapes(cfg, len(Tokenizer(state["docs"]).chars) + 1)
    n = sum(r * c for r, c in shapes.values())
    arrays = {}
    for key, name in (("params", "params"), ("m", "adam.m"), ("v", "adam.v")):
        try:
            a = np.asarray(state.get(key), dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"{name!r} must be numbers") from None
        if a.shape != (n,):
            raise ValueError(f"{name!r} has shape {a.shape}: the model has {n} parameters")
        arrays[key] = a
    start, parts = 0, {}
    for name, (rows, cols) in shapes.items():  # the matrix a fault is in
        parts[name], start = arrays["params"][start:start + rows * cols], start + rows * cols
    for name, a in {**parts, "adam.m": arrays["m"], "adam.v": arrays["v"]}.items():
        if not np.isfinite(a).all():
            raise ValueError(f"{name!r} has non-finite values")
    if (arrays["v"] < 0).any():
        raise ValueError("'adam.v' has negative values")
    return {**state, "rng": rng, **arrays}
