"""python -m microgpt_c check FILE [the run's flags]: compare what a port of
microgpt printed (its captured stdout) with the reference's output for the
same flags, computed here in exact mode. docs/checking.md explains the report."""
import math
import re
import sys

from .cli import (add_sampling, add_settings, check_sampling_flags, described, message, new_run, samples,
                  train_step)
from .files import check_paths, read_bounded
from .config import asdict

MAX_BYTES = 64 << 20  # a run prints about 40 bytes a step: a million steps fit
MAX_SAMPLES = 100_000  # sampling is drawn up to the highest sample number in the file
HEADERS = {"num docs": lambda run: len(run.docs), "vocab size": lambda run: run.tok.vocab_size,
           "num params": lambda run: run.num_params}
# lenient about spacing, and about what follows the loss (timings, a learning rate)
HEADER = re.compile(r"\s*(num docs|vocab size|num params)\s*:\s*(\d+)\s*$")
# the loss is everything up to a space or a '|' ("3,9999" is not a number, not 3); a comma or semicolon after it
# is punctuation ("loss 3.3660, lr 0.01")
LOSS = re.compile(r"\s*step\s+(\d+)\s*/\s*(\d+)\s*\|\s*loss\s*:?\s*([^\s|]*)")
# the name is the rest of the line after one space: a name may begin or end with spaces of any kind
SAMPLE = re.compile(r"\s*sample\s+(\d+)\s*: ?(.*)")
LINE_BREAK = re.compile(r"\r\n?|\n")
DECIMAL = re.compile(r"[-+]?(\d+(?:\.(\d*))?|\.(\d+))([eE][-+]?\d+)?")  # a finite number as printf prints it
MAX_DIGITS = 18  # a step or sample number longer than this is no run's


def reference_run(a):
    """The reference's run for the flags: the C engine in exact mode (bit for
    bit the reference's numbers), not yet trained."""
    return new_run(a, "c", "exact")


def read_text(path):
    """The text of a regular file or pipe of at most MAX_BYTES, without a
    byte order mark; a ValueError otherwise."""
    return read_bounded(path, MAX_BYTES, "run's output").decode("utf-8-sig", errors="replace")


def parse(text, path):
    """The lines of a run, in order: ("header", name, value), ("loss", step,
    total, printed loss) and ("sample", i, name); every other line ignored.
    A ValueError names the line of a number too long to be a run's."""
    lines = []
    for n, line in enumerate(LINE_BREAK.split(text), 1):
        if m := HEADER.match(line):
            lines.append(("header", m[1], whole(m[2], path, n)))
        elif m := LOSS.match(line):
            lines.append(("loss", whole(m[1], path, n), whole(m[2], path, n), m[3].rstrip(",;")))
        elif m := SAMPLE.match(line):
            lines.append(("sample", whole(m[1], path, n), m[2]))
    return lines


def whole(digits, path, n):
    """The count or number on line n; one too long for any run is a ValueError
    naming the line (int() would refuse it with a message naming none)."""
    if len(digits) > MAX_DIGITS:
        raise ValueError(f"{path}: line {n}: a number of {len(digits):,} digits ({digits[:8]}...): no run's")
    return int(digits)


def number(text):
    """A printed loss as a number; NaN if printf would not print it so ('3,9999', '3_9')."""
    return float(text) if DECIMAL.fullmatch(text) or text.lower().lstrip("+-") in ("nan", "inf") else math.nan


def digits(text):
    """The significant digits of a printed number; None if printf would not print it so."""
    m = DECIMAL.fullmatch(text)
    return len(re.sub(r"\D", "", m[1]).lstrip("0")) if m else None


def in_full(texts):
    """Whether printed losses are their doubles' shortest reprs (Python's repr,
    JavaScript's toString): each reads back as itself and some need 16
    digits or more (a fixed number of decimals does neither)."""
    return (bool(texts) and all(digits(t) and repr(float(t)) == t for t in texts)
            and any(digits(t) >= 16 for t in texts))


def compare(theirs, ref, full):
    """How a printed loss compares with the reference's loss ref: (equal, ref
    as compared, decimals compared or None when compared as doubles). The
    digits pin down a double when there are 17 significant ones, or when
    the losses are printed in full (in_full): then the doubles are compared;
    otherwise ref rounded as theirs is printed (decimals, or an exponent), 4
    decimals if theirs is not a number."""
    m = DECIMAL.fullmatch(theirs)
    if not m:
        return False, f"{ref:.4f}", 4
    if full or digits(theirs) >= 17:
        return float(theirs) == ref, repr(ref), None
    decimals = len(m[2] or m[3] or "")
    printed = f"{ref:.{decimals}{'e' if m[4] else 'f'}}"
    return float(theirs) == float(printed), printed, decimals


class Report:
    def __init__(self, lines, run, losses, names, tolerance):
        self.counts = {"header": [0, 0], "loss": [0, 0], "sample": [0, 0]}  # kind: [equal, all]
        self.first, self.last_equal, self.largest = None, 0, (0.0, None, False)  # (difference, step, equal)
        self.decimals = []  # of each loss line compared to its printed decimals (the others: as doubles)
        self.tolerated = 0  # loss lines that differ in the printed digits, by no more than the tolerance
        self.totals = sorted({line[2] for line in lines if line[0] == "loss"})
        full = in_full([line[3] for line in lines if line[0] == "loss"])
        for kind, key, *rest in lines:
            if kind == "header":
                theirs, ref = rest[0], HEADERS[key](run)
                equal, where = theirs == ref, key
            elif kind == "loss":
                theirs, where, ref, equal = rest[1], f"step {key}", "no such step", False
                if 1 <= key <= len(losses):
                    equal, ref, decimals = compare(theirs, losses[key - 1], full)
                    if decimals is not None:
                        self.decimals.append(decimals)
                    diff = abs(number(theirs) - losses[key - 1])  # up to half the last printed digit when equal
                    if not diff <= self.largest[0]:  # a NaN counts as largest
                        self.largest = (diff, key, equal)
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
        diff, step, equal = self.largest
        if step is not None:
            rounding = ", an equal line: the rounding of its printed digits" if equal and diff else ""
            out.append(f"largest loss difference: {diff:.3g} (step {step}{rounding})")
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
        """One line that says what is equal, and to what: the printed digits, or the last bit."""
        digits = f"to the printed digits ({min(self.decimals)} decimals)" if self.decimals else "to the last bit"
        if self.first is None:
            if self.tolerated:
                return (f"equal within --tolerance {tolerance:g}: {self.tolerated} loss lines differ in the printed "
                        "digits by no more than it, every other line equal")
            if not self.counts["loss"][1]:
                return "equal: every printed line equal (no loss lines)"
            if not self.decimals:
                return "bit-exact: every printed line equal, every loss to the last bit (printed in full)"
            return (f"equal to the printed digits: every printed line equal, losses to {min(self.decimals)} "
                    "decimals (the digits not printed are not compared; trace's are every bit)")
        kind, key, *_ = self.first
        if kind == "header":
            return f"differs before training: {key} (the documents or the model's sizes)"
        if kind == "sample":
            losses = f"every loss line equal {digits}; " if self.counts["loss"][1] else ""
            return f"{losses}names differ from sample {key} (the sampler: temperature, softmax, random draws)"
        if self.last_equal == 0:
            return (f"differs from the first printed step ({key}): the random generator, the documents' order "
                    f"or the initial weights (trace --step {key} has the reference's numbers)")
        return (f"equal {digits} up to step {self.last_equal}, differs from step {key} "
                f"(trace --step {key} has the reference's numbers)")


def parser(p):
    described(p, __doc__)
    p.add_argument("file", metavar="FILE", help="what the port printed (its stdout, captured)")
    add_settings(p, "the run's settings (as given to the run being checked)")
    add_sampling(p, num_samples=False)
    p.add_argument("--tolerance", type=float, default=0.0, metavar="X",
                   help="accept loss lines that differ by X or less (default: %(default)s, the printed digits)")
    return p


def main(p, a):
    try:
        check_paths(inputs=[("FILE", a.file), ("--data", a.data)])
        check_sampling_flags(a)
        if not (a.tolerance >= 0 and math.isfinite(a.tolerance)):
            raise ValueError(f"--tolerance must be 0 or more, not {a.tolerance}")
        try:
            lines = parse(read_text(a.file), a.file)
        except MemoryError:  # the file, not the run (whose memory is estimated before it starts)
            raise MemoryError(f"out of memory reading {a.file}") from None
        if not any(kind in ("loss", "sample") for kind, *_ in lines):
            raise ValueError(f"{a.file} holds no run (no 'step k / N | loss x' line and no 'sample i: name' line)")
        num_samples = max((line[1] for line in lines if line[0] == "sample"), default=0)
        if num_samples > MAX_SAMPLES:
            raise ValueError(f"{a.file}: sample {num_samples}: check draws at most {MAX_SAMPLES:,} samples")
        run = reference_run(a)
        losses = [train_step(run) for _ in range(run.steps)]
        names = list(samples(run, num_samples, a.temperature))
    except (ValueError, MemoryError) as e:
        p.error(message(e))
    report = Report(lines, run, losses, names, a.tolerance)
    print(report.text(a.file, run, a.temperature, a.tolerance))
    sys.exit(0 if report.equal() else 1)
