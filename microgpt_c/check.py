"""python -m microgpt_c check FILE [the run's flags]: compare what a port of
microgpt printed (its captured stdout) with the reference's output for the
same flags, computed here in exact mode. docs/checking.md explains the report."""
import math
import re
import sys

from .cli import PROG, Parser, add_settings, new_run
from .files import read_bounded
from .config import asdict

MAX_BYTES = 64 << 20  # a run prints about 40 bytes a step: a million steps fit
MAX_SAMPLES = 100_000  # sampling is drawn up to the highest sample number in the file
HEADERS = {"num docs": lambda run: len(run.docs), "vocab size": lambda run: run.tok.vocab_size,
           "num params": lambda run: run.num_params}
# lenient about spacing, and about what follows the loss (timings, a learning rate)
HEADER = re.compile(r"\s*(num docs|vocab size|num params)\s*:\s*(\d+)\s*$")
LOSS = re.compile(r"\s*step\s+(\d+)\s*/\s*(\d+)\s*\|\s*loss\s*:?\s*([-+]?[\w.]+)")
SAMPLE = re.compile(r"\s*sample\s+(\d+)\s*:(.*)$")
LINE_BREAK = re.compile(r"\r\n?|\n")


def reference_run(a):
    """The reference's run for the flags: the C engine in exact mode (bit for
    bit the reference's numbers), not yet trained."""
    return new_run(a, "c", "exact")


def read_text(path):
    """The text of a regular file of at most MAX_BYTES; a ValueError otherwise."""
    return read_bounded(path, MAX_BYTES, "run's output").decode("utf-8", errors="replace")


def parse(text):
    """The lines of a run, in order: ("header", name, value), ("loss", step,
    total, printed loss) and ("sample", i, name); every other line ignored."""
    lines = []
    for line in LINE_BREAK.split(text):
        if m := HEADER.match(line):
            lines.append(("header", m[1], int(m[2])))
        elif m := LOSS.match(line):
            lines.append(("loss", int(m[1]), int(m[2]), m[3]))
        elif m := SAMPLE.match(line):
            lines.append(("sample", int(m[1]), m[2].strip()))
    return lines


def number(text):
    try:
        return float(text)
    except ValueError:
        return math.nan


def printed_like(theirs, ref):
    """ref printed to as many decimals as theirs (a printed loss) has; 4, the
    reference's, if theirs is not a plain decimal."""
    decimals = len(theirs.partition(".")[2]) if re.fullmatch(r"[-+]?\d+(\.\d*)?", theirs) else 4
    return f"{ref:.{decimals}f}"


class Report:
    def __init__(self, lines, run, losses, names, tolerance):
        self.counts = {"header": [0, 0], "loss": [0, 0], "sample": [0, 0]}  # kind: [equal, all]
        self.first, self.last_equal, self.largest = None, 0, (0.0, None)  # largest: (difference, step)
        self.tolerated = 0  # loss lines that differ in the printed digits, by no more than the tolerance
        self.totals = sorted({line[2] for line in lines if line[0] == "loss"})
        for kind, key, *rest in lines:
            if kind == "header":
                theirs, ref = rest[0], HEADERS[key](run)
                equal, where = theirs == ref, key
            elif kind == "loss":
                theirs, where, ref, equal = rest[1], f"step {key}", "no such step", False
                if 1 <= key <= len(losses):
                    ref = printed_like(theirs, losses[key - 1])
                    equal = theirs == ref
                    diff = abs(number(theirs) - losses[key - 1])  # up to half the last printed digit when equal
                    if not diff <= self.largest[0]:  # a NaN counts as largest
                        self.largest = (diff, key)
                    if not equal and diff <= tolerance:
                        equal, self.tolerated = True, self.tolerated + 1
            else:
                theirs, ref = rest[0], names[key - 1] if key >= 1 else None
                equal, where = theirs == ref, f"sample {key}"
            self.counts[kind][0] += equal
            self.counts[kind][1] += 1
            if not equal and self.first is None:
                self.first = (kind, key, where, theirs, ref)
            if kind == "loss" and equal and self.first is None:
                self.last_equal = key

    def equal(self):
        return self.first is None

    def text(self, path, run, temperature, tolerance):
        flags = {**asdict(run.schedule), **asdict(run.cfg), "temperature": temperature}
        out = [f"checked {path} against the reference ({', '.join(f'{k} {v}' for k, v in flags.items())})"]
        for kind, label in (("header", "header lines"), ("loss", "loss lines"), ("sample", "names")):
            equal, total = self.counts[kind]
            if total:
                out.append(f"{label} equal: {equal} / {total}")
        diff, step = self.largest
        if step is not None:
            out.append(f"largest loss difference: {diff:.3g} (step {step})")
        if self.first:
            kind, key, where, theirs, ref = self.first
            out.append(f"first difference: {where}: theirs {theirs!r}, reference {ref!r}")
        wrong = [n for n in self.totals if n != run.steps]
        if wrong:
            out.append(f"note: the file's run has {wrong[0]} steps (step k / {wrong[0]}), the reference here "
                       f"{run.steps}: check with --steps {wrong[0]}")
        out.append("verdict: " + self.verdict(tolerance))
        return "\n".join(out)

    def verdict(self, tolerance):
        if self.first is None:
            if self.tolerated:
                return (f"equal within --tolerance {tolerance:g}: {self.tolerated} loss lines differ in the printed "
                        "digits by no more than it, every other line equal")
            return "bit-exact: every printed line equal"
        kind, key, *_ = self.first
        if kind == "header":
            return f"differs before training: {key} (the documents or the model's sizes)"
        if kind == "sample":
            return (f"every loss line equal; names differ from sample {key} "
                    "(the sampler: temperature, softmax, random draws)")
        if self.last_equal == 0:
            return (f"differs from the first printed step ({key}): the random generator, the documents' order "
                    f"or the initial weights (trace --step {key} has the reference's numbers)")
        return (f"equal to the printed digits up to step {self.last_equal}, differs from step {key} "
                f"(trace --step {key} has the reference's numbers)")


def parser():
    p = Parser(prog=f"{PROG} check", description=__doc__.split("\n\n")[0].replace("\n", " "))
    p.add_argument("file", metavar="FILE", help="what the port printed (its stdout, captured)")
    add_settings(p, "the run's settings (as given to the run being checked)")
    p.add_argument("--temperature", type=float, default=0.5,
                   help="the sampling temperature the run used (default: %(default)s)")
    p.add_argument("--tolerance", type=float, default=0.0, metavar="X",
                   help="accept loss lines that differ by X or less (default: %(default)s, the printed digits)")
    return p


def main(argv):
    p = parser()
    a = p.parse_args(argv)
    try:
        if not (a.temperature > 0 and math.isfinite(a.temperature)):
            raise ValueError(f"--temperature must be above 0, not {a.temperature}")
        if not (a.tolerance >= 0 and math.isfinite(a.tolerance)):
            raise ValueError(f"--tolerance must be 0 or more, not {a.tolerance}")
        lines = parse(read_text(a.file))
        if not any(kind in ("loss", "sample") for kind, *_ in lines):
            raise ValueError(f"{a.file} holds no run (no 'step k / N | loss x' line and no 'sample i: name' line)")
        num_samples = max((line[1] for line in lines if line[0] == "sample"), default=0)
        if num_samples > MAX_SAMPLES:
            raise ValueError(f"{a.file}: sample {num_samples}: check draws at most {MAX_SAMPLES:,} samples")
        run = reference_run(a)
    except (ValueError, MemoryError) as e:
        p.error(str(e))
    losses = run.train()
    names = run.sample(num_samples, a.temperature)
    report = Report(lines, run, losses, names, a.tolerance)
    print(report.text(a.file, run, a.temperature, a.tolerance))
    sys.exit(0 if report.equal() else 1)
