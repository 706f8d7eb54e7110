"""python -m microgpt_c trace --step K --out PATH.npz [the run's flags]: the
reference's numbers at training step K (from 1), for finding the first number
a port gets wrong. docs/checking.md lists the names in the file."""
from .check import reference_run
from .cli import add_settings, described, message, require_numpy, train_step
from .files import atomic_write, check_paths
from .model import param_shapes
from .record import forward, weights


def trace(run, step):
    """The arrays of the trace at step (from 1) of run, a Run at step 0 on the
    C engine in exact mode; leaves run after step."""
    import numpy as np

    while run.step < step - 1:
        train_step(run)
    shapes = param_shapes(run.cfg, run.tok.vocab_size)
    values = run.E.param_values()  # the step's parameters, before its update
    c_loss = train_step(run)  # first: numbers that overflow are its one line, not the Recorder's traceback
    doc = run.docs[(step - 1) % len(run.docs)][:run.cfg.block_size]
    tokens = run.tok.encode(doc)
    R, loss = forward(run, tokens, values)
    R.backward(loss)
    if R.value(loss) != c_loss:  # the two engines are bit-identical (tests say so): this would be a bug
        raise RuntimeError(f"step {step}: the pure-Python engine's loss {R.value(loss)!r} is not "
                           f"the C engine's {c_loss!r}")
    npos = len(R.seen["logits"])  # the positions trained on: a document cut to block_size has one token more
    arrays = {"loss": np.float64(c_loss), "tokens": np.array(tokens[:npos + 1], dtype=np.int64)}
    values, grads, at = R.param_values(), R.param_grads(), 0
    for name, (rows, cols) in shapes.items():
        arrays[name] = values[at:at + rows * cols].reshape(rows, cols)
        arrays[name + ".grad"] = grads[at:at + rows * cols].reshape(rows, cols)
        at += rows * cols
    for name, rows in R.seen.items():
        arrays[name] = weights(rows, run.cfg.n_head) if name.endswith(".attn_weights") else \
            np.array(rows, dtype=np.float64)
    return arrays


def parser(p):
    described(p, __doc__)
    p.add_argument("--step", type=int, required=True, metavar="K", help="the training step, from 1 (as printed)")
    p.add_argument("--out", required=True, metavar="PATH.npz", help="where to write the arrays (numpy's .npz)")
    add_settings(p, "the run's settings (as given to the run being traced)")
    return p


def main(p, a):
    try:
        check_paths(inputs=[("--data", a.data)], outputs=[("--out", a.out)])
        require_numpy("trace")
        run = reference_run(a)
        if not 1 <= a.step <= run.steps:
            raise ValueError(f"--step must be from 1 to --steps ({run.steps}), not {a.step}")
        arrays = trace(run, a.step)
    except (ValueError, MemoryError) as e:
        p.error(message(e))
    import numpy as np

    try:
        atomic_write(a.out, lambda f: np.savez(f, **arrays))
    except OSError as e:
        p.error(f"cannot write {a.out}: {e.strerror}")
    print(f"wrote {a.out}: step {a.step}, loss {float(arrays['loss'])!r}, {len(arrays)} arrays")
