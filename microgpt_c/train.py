"""Train microgpt's GPT on the packaged names (or --data), then print samples,
as the reference does."""
import signal
import sys
import time

from .cli import (COMMANDS, PROG, add_engine, add_sampling, add_settings, as_written, check_sampling_flags, flag,
                  flagged, given_settings, handling, message, new_run, print_samples, require_numpy, train_step)
from .files import check_paths, same
from .run import Run

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # each stops training after the step in progress


class EMA:
    """Exponential moving average, bias-corrected as Adam's moments are (so
    it does not start from 0)."""

    def __init__(self, beta=0.99):
        self.beta, self.avg, self.n = beta, 0.0, 0

    def __call__(self, x):
        self.n += 1
        self.avg = self.beta * self.avg + (1 - self.beta) * x
        return self.avg / (1 - self.beta**self.n)


class Progress:
    """A live line on stderr when it is a terminal (else nothing): step, loss,
    smoothed loss, speed, ETA."""

    def __init__(self, first, total):
        self.first, self.total, self.on = first, total, sys.stderr.isatty()
        self.start, self.drawn, self.visible = time.perf_counter(), 0.0, False

    def update(self, step, loss, smoothed):
        now = time.perf_counter()
        if not self.on or now - self.drawn < 0.1 and step < self.total:
            return  # redrawn ten times a second at most: a terminal is slow
        rate = (step - self.first) / (now - self.start)
        eta = round((self.total - step) / rate)
        sys.stderr.write(f"\rstep {step:4d} / {self.total:4d} | loss {loss:.4f} | smoothed {smoothed:.4f} | "
                         f"{rate:,.1f} steps/s | ETA {eta // 60}:{eta % 60:02d}\x1b[K")
        sys.stderr.flush()
        self.drawn, self.visible = now, True

    def clear(self):
        if self.visible:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()
            self.visible = False


def train(p, run, a):
    """Train to the end of the schedule: the loss lines, a progress line on a
    terminal, checkpoints. A stop signal takes effect after the step in
    progress, so what --save writes then is a completed step. Returns the
    losses, their smoothed values, the seconds spent in training steps, and
    the last held-out loss with the seconds spent evaluating."""
    log_every = a.log_every or log_interval(run)
    progress = Progress(run.step, run.steps)
    shared = progress.on and sys.stdout.isatty()  # the loss lines go to the progress line's terminal
    ema, losses, smoothed, stop, elapsed, saved, held = EMA(), [], [], [], 0.0, [], [None, 0.0]

    def fail(message):
        progress.clear()  # or it would run into the message, and its clearing erase it
        p.error(message)

    def save(last=False):
        try:
            run.save(a.save)
        except OSError as e:
            fail(f"cannot write {a.save}: {e.strerror}")
        saved.append(run.step)
        if last and not stop:  # a stop says what it saved in its own line
            progress.clear()
            sys.stderr.write(f"{PROG}: wrote the checkpoint {a.save} (step {run.step} of {run.steps})\n")

    with handling(STOP_SIGNALS, lambda signum, frame: stop.append(signum)):
        try:
            while run.step < run.steps and not stop:
                t0 = time.perf_counter()
                try:
                    loss = train_step(run)
                except ValueError as e:
                    fail(f"{e} ({a.save} holds step {saved[-1]})" if saved else str(e))
                elapsed += time.perf_counter() - t0
                losses.append(loss)
                smoothed.append(ema(loss))
                if run.step % log_every == 0 or run.step == run.steps:
                    if shared:
                        progress.clear()
                    print(loss_line(run, loss, held, fail), flush=True)
                progress.update(run.step, loss, smoothed[-1])
                if a.save_every and run.step % a.save_every == 0:
                    save()
            if a.save:
                save(last=True)
        finally:
            progress.clear()
    if stop:
        stopped(run, a, stop[0])
    return losses, smoothed, elapsed, held


def log_interval(run):
    """Steps between loss lines: a held-out document's forward costs up to
    half a training step (measured in fast mode, where the ratio is highest),
    so 10 steps per document keep evaluating near a twentieth of training."""
    return max(100, 10 * len(run.held_out)) if run.held_out else 100 if sys.stdout.isatty() else 1


def stopped(run, a, signum):
    """Exit as the stop signal asks, saying what was saved."""
    saved = f"saved step {run.step} to {a.save} (go on with --resume {a.save})" if a.save else "nothing saved"
    name = signal.Signals(signum).name
    sys.stderr.write(f"{PROG}: interrupted by {name} after step {run.step} of {run.steps}: {saved}\n")
    sys.exit(128 + signum)


def loss_line(run, loss, held, fail):
    """A loss line; with held-out documents, their loss too (held: the last
    one and the seconds spent evaluating, updated)."""
    line = f"step {run.step:4d} / {run.steps:4d} | loss {loss:.4f}"
    if run.held_out:
        t0 = time.perf_counter()
        try:
            held[0] = run.val_loss()
        except ArithmeticError as e:  # the C engine refuses non-finite numbers
            fail(f"cannot compute the held-out loss after step {run.step}: {e}")
        held[1] += time.perf_counter() - t0
        line += f" | held-out loss {held[0]:.4f}"
    return line


def parser(p):
    """The main job's flags; its usage and description list every command (cli.COMMANDS)."""
    p.prog, p.formatter_class = PROG, as_written
    p.usage = "\n       ".join(f"{PROG} {'' if name == 'train' else name + ' '}{usage}"
                                for name, (_, usage, _) in COMMANDS.items())
    commands = "".join(f"\n  {name:<12} {summary}" for name, (_, _, summary) in COMMANDS.items())
    p.description = (f"{__doc__} The commands (the word train may be left out):\n{commands}\n\n"
                     "Each command's --help lists its flags.")
    add_engine(p)
    model, schedule = add_settings(p, "the run")
    model.description = "A checkpoint keeps these: not with --resume."
    schedule.description = "A checkpoint keeps these: with --resume, only --steps and --decay-steps."  # one line
    g = p.add_argument_group("checkpoints")
    g.add_argument("--save", metavar="PATH",
                   help="write a checkpoint here at the end of training and when stopped (default: none)")
    g.add_argument("--save-every", type=int, metavar="K", help="with --save: also every K steps (default: none)")
    g.add_argument("--resume", metavar="PATH",
                   help="go on with the run saved in this checkpoint, its settings and all (default: none)")
    g = p.add_argument_group("output")
    g.add_argument("--log-every", type=int, metavar="K",
                   help="print the loss every K steps (default: 1, or 100 when the output is a terminal; with "
                        "--val-docs N, 100 or 10 N if more)")
    g.add_argument("--plot", metavar="PATH.png", help="write the loss curve here (needs matplotlib) (default: none)")
    add_sampling(g)
    return p


def checked_run(a):
    """The run the flags ask for, a new one or a checkpoint's, every input
    checked first (a ValueError or MemoryError says what is wrong)."""
    # --save may name the checkpoint --resume reads: the run goes on in it
    going_on = a.save and a.resume and same(a.save, a.resume)
    check_paths(inputs=[("--data", a.data)] + [("--resume", a.resume)] * (not going_on),
                outputs=[("--save", a.save), ("--plot", a.plot)])
    check_sampling_flags(a)
    if a.log_every is not None and a.log_every < 1:
        raise ValueError("--log-every must be 1 or more")
    if a.save_every is not None and (a.save_every < 1 or not a.save):
        raise ValueError("--save-every needs --save, and must be 1 or more")
    if a.plot:
        from .plot import check
        check(a.plot)
    if a.save or a.resume:  # loaded now: under a memory limit its import could fail after training
        require_numpy("a checkpoint (--save, --resume)")
        from . import checkpoint  # noqa: F401
    given = [flag(name) for name in given_settings(a)] + (["--data"] if a.data is not None else [])
    if a.resume is not None:
        fixed = [g for g in given if g not in ("--steps", "--decay-steps")]  # these extend the run
        if fixed:
            raise ValueError(f"--resume continues the checkpoint's run with its own settings: "
                             f"{', '.join(fixed)} cannot be given with it (only --steps and --decay-steps, "
                             f"to train on)")
        run = Run.load(a.resume, a.engine, a.mode)
        if not hasattr(a, "steps") and run.step == run.steps:
            raise ValueError(f"{a.resume} is a finished run (step {run.step} of {run.steps}): to train on, "
                             f"give --steps N with N above {run.step}")
        if hasattr(a, "steps") or hasattr(a, "decay_steps"):
            try:
                run.extend(getattr(a, "steps", run.steps), getattr(a, "decay_steps", None))
            except ValueError as e:
                raise ValueError(flagged(str(e), ("steps", "decay_steps"))) from None
    else:
        run = new_run(a, a.engine, a.mode)
    if a.plot and run.step == run.steps:
        raise ValueError(f"--plot has no loss to draw: the run is at its last step ({run.steps})")
    return run


def main(p, a):
    try:  # every input checked before anything is printed
        run = checked_run(a)
    except (ValueError, MemoryError) as e:
        p.error(message(e))

    cut = sum(len(doc) >= run.cfg.block_size for doc in run.docs)
    if cut:  # on stderr: stdout stays the reference's lines
        sys.stderr.write(f"{PROG}: {cut:,} of {len(run.docs):,} documents have {run.cfg.block_size} characters or "
                         f"more (--block-size): training reads their first {run.cfg.block_size} only\n")
    print(f"num docs: {len(run.docs)}" + (f" (and {len(run.held_out)} held out)" if run.held_out else ""))
    print(f"vocab size: {run.tok.vocab_size}")
    print(f"num params: {run.num_params}")
    if a.resume:
        print(f"resumed from {a.resume} at step {run.step} / {run.steps}")
    first = run.step
    losses, smoothed, elapsed, held = train(p, run, a)
    print(f"training time: {elapsed:.2f}s ({elapsed / max(run.steps - first, 1) * 1000:.2f}ms/step)")
    if held[0] is not None:
        print(f"held-out loss: {held[0]:.4f} (evaluating took {held[1]:.2f}s)")
    if a.plot:
        from .plot import loss_curve
        try:
            loss_curve(a.plot, range(first + 1, run.steps + 1), losses, smoothed,
                       f"microgpt_c: {run.cfg.title()}, {run.E.name} engine, {run.E.mode} mode")
        except OSError as e:
            p.error(f"cannot write {a.plot}: {e.strerror}")
        sys.stderr.write(f"{PROG}: wrote the loss plot {a.plot}\n")
    print_samples(p, run, a)
