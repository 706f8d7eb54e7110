"""What the commands share: the parser, the run's settings as flags (derived
from config.py), the engine choices (from registry.py)."""
import argparse
import os
import re
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


def formatter(prog):
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
    return argparse.HelpFormatter(prog, width=(columns or 80) - 2)


class Parser(argparse.ArgumentParser):
    def __init__(self, **kwargs):
        super().__init__(formatter_class=formatter, **kwargs)
        self.add_argument("--version", action=Version)
        # a value that looks like a negative number is one, in scientific
        # notation too (argparse's own pattern takes -1e-3 for a flag)
        self._negative_number_matcher = NEGATIVE

    def error(self, message):
        """Any bad input: one line, exit status 2, no traceback."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def flag(name):
    return "--" + name.replace("_", "-")


def add_settings(p, title):
    """A run's flags (what new_run reads): one for every field of Config and
    Schedule, left out unless given (so a command can tell it was; its
    default is in its help), and --data."""
    g = p.add_argument_group(title)
    for f in (*fields(Config), *fields(Schedule)):
        g.add_argument(flag(f.name), type=f.type, metavar=f.name.upper(), default=argparse.SUPPRESS,
                       help=f"{f.help} (default: {f.default})")
    g.add_argument("--data", metavar="PATH", type=data_path,
                   help="a file of one document per line, or a packaged text: names, or austen (Pride and "
                        "Prejudice's lines) (default: names)")


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
    docs = load_docs(a.data)
    try:
        return Run(cfg, docs, engine=engine, mode=mode, **asdict(schedule))
    except ValueError as e:  # val_docs against the documents' count
        raise ValueError(flagged(str(e))) from None


def add_engine(p, modes=True):
    p.add_argument("--engine", choices=list(ENGINES), default="c",
                   help="c: the C node store; python: the pure-Python Value graph; torch: PyTorch, if installed "
                        "(default: %(default)s)")
    if modes:
        p.add_argument("--mode", choices=MODES,
                       help="exact: the reference's graph, bit for bit; fast: fused nodes (C engine); "
                            "eager: our model code on tensors, user: whole-document layers, as a PyTorch user "
                            "writes them (torch) (default: the engine's first mode; with --resume, the checkpoint's "
                            "mode if the engine has it)")
