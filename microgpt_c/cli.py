"""What the commands share: the parser, the run's settings as flags (derived
from config.py), the engine choices (from registry.py)."""
import argparse
import contextlib
import math
import os
import re
import signal
import sys

from .config import Config, Schedule, asdict, fields
from .registry import ENGINES, MODES
from .text import data_path

PROG = "python -m microgpt_c"
NEGATIVE = re.compile(r"^-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^-(inf|nan)$", re.IGNORECASE)


class Version(argparse.Action):
    """--version, read from the package's metadata only when asked (reading
    it costs more than the rest of start-up)."""

    def __init__(self, option_strings, dest, **kwargs):
        super().__init__(option_strings, dest, nargs=0, help="show the version and exit")

    def __call__(self, parser, *args):
        import importlib.metadata
        try:
            version = importlib.metadata.version("microgpt_c")
        except importlib.metadata.PackageNotFoundError:  # a checkout that was never installed
            version = "(not installed)"
        print(f"microgpt_c {version}")
        parser.exit()


def formatter(prog, layout=argparse.HelpFormatter):
    """argparse's help layout, at the terminal's width found as shutil finds it
    (COLUMNS if positive, else the terminal's, else 80) without importing
    shutil: argparse makes a formatter for every flag, and that import was 3%
    of the main job."""
    columns = os.environ.get("COLUMNS", "")
    columns = int(columns) if columns.isdigit() else 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns
        except (AttributeError, ValueError, OSError):  # no stdout, or not a terminal
            columns = 0
    return layout(prog, width=(columns or 80) - 2)


def as_written(prog):
    """formatter, keeping the description's lines as they are (a list)."""
    return formatter(prog, argparse.RawDescriptionHelpFormatter)


class Parser(argparse.ArgumentParser):
    def __init__(self, formatter_class=formatter, **kwargs):
        super().__init__(formatter_class=formatter_class, **kwargs)
        self.add_argument("--version", action=Version)
        # a value that looks like a negative number is one, in scientific
        # notation too (argparse's own pattern takes -1e-3 for a flag)
        self._negative_number_matcher = NEGATIVE

    def error(self, message):
        """Any bad input: one line, exit status 2, no traceback."""
        self.exit(2, f"{self.prog}: error: {message}\n")


# python -m microgpt_c COMMAND: each command's module (which fills in its parser), what follows the command word
# in the usage (the main job's word, train, is left out there), and what it does. __main__ makes an argparse
# subparser of each.
COMMANDS = {
    "train": ("train", "[options]            (train, then sample)", "train, then sample: the main job, these flags"),
    "sample": ("sample", "--load PATH [options]", "print samples from a checkpoint written by --save"),
    "attention": ("attention", "--load PATH --text TEXT --out PATH.png",
                  "draw what each attention head looks at, reading a text"),
    "bench": ("bench", "[options]", "time the same training on each engine and mode"),
    "bench value": ("valuebench", "[options]", "time micrograd's demo on each Value engine"),
    "check": ("check", "FILE [the run's options]", "compare a port's printed output with the reference's"),
    "trace": ("trace", "--step K --out PATH.npz [the run's options]",
              "write every number of one training step, for a port to check"),
}


def described(p, doc):
    """p, described by its module's first paragraph."""
    p.description = doc.split("\n\n")[0].replace("\n", " ")


def flag(name):
    return "--" + name.replace("_", "-")


def add_settings(p, title, model="model size"):
    """A run's flags (what new_run reads): one for every field of Config (in
    the group model) and of Schedule, and --data (in the group title), left
    out unless given (so a command can tell it was; its default is in its
    help). Returns the two groups."""
    groups = p.add_argument_group(model), p.add_argument_group(title)
    for g, settings in zip(groups, (Config, Schedule)):
        for f in fields(settings):
            g.add_argument(flag(f.name), type=f.type, metavar=f.name.upper(), default=argparse.SUPPRESS,
                           help=f"{f.help} (default: {f.default})")
    g.add_argument("--data", metavar="PATH", type=data_path,
                   help="a file of one document per line, or a packaged text: names, or austen (Pride and "
                        "Prejudice's lines) (default: names)")
    return groups


# the Python API's parameter names that are flags in the CLI
PARAMETERS = (*(f.name for f in (*fields(Config), *fields(Schedule))), "temperature", "num_samples", "prefix")


def flagged(message, names=PARAMETERS):
    """An error message from the Python API, naming these parameters as flags
    (not for messages that hold a path: a name could be part of it)."""
    for name in names:
        message = re.sub(rf"(?<![-\w]){name}\b", flag(name), message)
    return message


def given_settings(a):
    """The settings flags given, by field name."""
    return [f.name for f in (*fields(Config), *fields(Schedule)) if hasattr(a, f.name)]


def settings(a):
    """(Config, Schedule) from the flags given and the defaults; a bad value
    is a ValueError that names its flag."""
    try:
        return (Config(**{f.name: getattr(a, f.name) for f in fields(Config) if hasattr(a, f.name)}),
                Schedule(**{f.name: getattr(a, f.name) for f in fields(Schedule) if hasattr(a, f.name)}))
    except ValueError as e:
        raise ValueError(flagged(str(e))) from None


def new_run(a, engine, mode):
    """The Run the settings flags and --data describe (a ValueError names the flag)."""
    from .run import Run
    from .text import load_docs

    cfg, schedule = settings(a)
    docs = None if a.data is None else load_docs(a.data)  # None: the packaged names, which Run reads
    try:
        return Run(cfg, docs, engine=engine, mode=mode, **asdict(schedule))
    except ValueError as e:  # val_docs against the documents' count
        raise ValueError(flagged(str(e))) from None


MODE_HELP = {"exact": "the reference's graph, bit for bit", "fast": "gradients summed in their own order (C engine)",
             "eager": "our model code on tensors (torch)",
             "user": "whole-document layers, as a PyTorch user writes them (torch)"}


def add_engine(p, modes=True):
    """--engine and (with modes) --mode, offering the modes of the engines
    installed (found without importing them)."""
    g = p.add_argument_group("engine")
    g.add_argument("--engine", choices=list(ENGINES), default="c",
                   help="c: the C node store; python: the pure-Python Value graph; torch: PyTorch, if installed "
                        "(default: %(default)s)")
    if modes:
        offered = [m for m in MODES if any(m in info.modes for info in ENGINES.values() if info.available())]
        g.add_argument("--mode", choices=offered,
                       help="; ".join(f"{m}: {MODE_HELP[m]}" for m in offered) +
                            " (default: the engine's first mode; with --resume, the checkpoint's mode if the "
                            "engine has it)")


def add_sampling(p, num_samples=True):
    """--temperature (and --num-samples): the flags every command that samples
    takes, checked by check_sampling_flags."""
    if num_samples:
        p.add_argument("--num-samples", type=int, default=20, metavar="N",
                       help="samples to draw (default: %(default)s)")
    p.add_argument("--temperature", type=float, default=0.5, metavar="T",
                   help="sampling temperature (default: %(default)s)")


def check_sampling_flags(a):
    """The sampling flags given (add_sampling) checked as the API checks them: a ValueError naming the flag."""
    from .run import check_sampling
    try:
        check_sampling(getattr(a, "num_samples", 0), a.temperature)
    except ValueError as e:
        raise ValueError(flagged(str(e), ("num_samples", "temperature"))) from None


def memory_message(e):
    """A MemoryError's one line: what ran out, even when it says nothing."""
    return f"out of memory{f': {e}' if str(e) else ' (the run needs more than the machine or its limits give)'}"


def message(e):
    """The one line for a ValueError or MemoryError: its own words (the memory
    estimate's say what the run needs), or what ran out when it says nothing."""
    return str(e) or (memory_message(e) if isinstance(e, MemoryError) else type(e).__name__)


def train_step(run):
    """run.train_step(); numbers that overflow (a learning rate far too high)
    are a ValueError naming the step and its document, on every engine and
    in every command."""
    step = run.step + 1
    try:
        loss = run.train_step()
        why = None if math.isfinite(loss) else f"the loss is {loss}"
    except (ArithmeticError, ValueError) as e:  # the C engine refuses non-finite numbers
        why = e
    if why is not None:
        raise ValueError(f"training stopped at step {step}, document {run.docs[(step - 1) % len(run.docs)]!r}: "
                         f"{why}")
    return loss


def samples(run, num_samples, temperature, prefix=""):
    """run.samples(...), one at a time; a model whose numbers overflow when
    it samples (weights trained with a huge learning rate, a temperature
    near 0) is a ValueError."""
    try:
        yield from run.samples(num_samples, temperature, prefix)
    except ArithmeticError as e:
        raise ValueError(f"cannot sample from this model: {e}") from None


def require_numpy(what):
    """A ValueError now, rather than after the work, if numpy cannot be
    imported (under a tight memory limit, say): what needs it."""
    try:
        import numpy  # noqa: F401
    except (ImportError, MemoryError) as e:  # numpy's ImportError is a page of advice: its last line says why
        why = (str(e).strip().splitlines() or [""])[-1] if isinstance(e, ImportError) else ""
        raise ValueError(f"{what} needs numpy, which cannot be imported here: {why or message(e)}") from None


@contextlib.contextmanager
def handling(signals, handler):
    """handler(signum, frame) for each of signals while inside, the old
    handlers after; a signal inherited as ignored (nohup) stays ignored."""
    old = {sig: signal.signal(sig, handler) for sig in signals if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def print_samples(p, run, a, prefix=""):
    """Each sample as it is made. A model whose numbers overflow (weights
    trained with a huge learning rate, say) is one line."""
    try:
        for i, name in enumerate(samples(run, a.num_samples, a.temperature, prefix)):
            print(f"sample {i + 1:2d}: {name}", flush=True)
    except ValueError as e:
        p.error(str(e))
