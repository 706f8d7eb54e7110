"""python -m microgpt_c bench: the same training (same seed, same documents)
on each engine and mode (by default the pure-Python engine, the C engine in
exact mode and in fast mode), each in a fresh process; one table of per-step
time, speedup over the first engine listed, graph size and memory."""
import argparse
import ctypes
import json
import math
import os
import resource
import signal
import statistics
import subprocess
import sys
import textwrap
import threading
import time

from . import memory
from .cli import add_settings, flag, flagged, given_settings, handling, message, new_run, settings
from .files import atomic_write, check_paths
from .registry import ENGINES, PAIRS, require
from .run import split
from .text import Tokenizer, load_docs

# every available engine:mode, PyTorch (float64, eager, CPU) as an outside anchor when installed
DEFAULT = [pair for pair in PAIRS if ENGINES[pair.split(":")[0]].available()]


def engines(text):
    """--engines: comma-separated engine:mode pairs."""
    pairs = text.split(",")
    if not all(pair in PAIRS for pair in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: expected engine:mode pairs from {', '.join(PAIRS)}, "
                                         f"comma-separated")
    return [tuple(pair.split(":")) for pair in pairs]


def measure(engine, mode, steps, a):
    """Train the first `steps` steps of the run the flags describe; per-step figures."""
    run = new_run(a, engine, mode)
    times, losses, nodes = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(run.train_step())
        times.append(time.perf_counter() - t0)
        if engine == "c":
            nodes.append(run.E.nodes())
    if engine == "python":  # count Values in an untimed second run of the same steps
        nodes = count_python_nodes(steps, a)
    return {"engine": engine, "mode": mode, "steps": steps, "step_seconds": times, "losses": losses,
            "nodes_per_step": statistics.mean(nodes) if nodes else None,  # none: torch's own graph
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def count_python_nodes(steps, a):
    from . import pyengine

    created = [0]
    init = pyengine.Value.__init__

    def counting_init(self, *args):
        created[0] += 1
        init(self, *args)

    run = new_run(a, "python", None)
    pyengine.Value.__init__ = counting_init
    try:
        counts = []
        for _ in range(steps):
            created[0] = 0
            run.train_step()
            counts.append(created[0])
    finally:
        pyengine.Value.__init__ = init
    return counts


def die_with(parent):
    """End this worker when its parent process ends, however it ends (even
    SIGKILL): the kernel's parent-death signal on Linux, a thread watching
    the parent elsewhere; and at once if the parent is already gone."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, signal.SIGKILL, 0, 0, 0) != 0:  # 1: PR_SET_PDEATHSIG
            raise OSError(ctypes.get_errno(), "prctl")
    except (OSError, AttributeError):  # not Linux
        def watch():
            while os.getppid() == parent:
                time.sleep(0.5)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent:  # it ended before the signal was asked for
        os._exit(1)


def worker(p, a):
    """One engine's figures as JSON on stdout; a failure as the CLI's one line on stderr."""
    engine, mode, parent = a.worker.split(":")
    die_with(int(parent))
    steps = settings(a)[1].steps
    try:
        print(json.dumps(measure(engine, mode, min(a.python_steps, steps) if engine == "python" else steps, a)))
    except (ValueError, ArithmeticError, MemoryError) as e:
        p.error(message(e))


def worker_flags(a):
    """The flags of the run a worker times: the settings and --data given, and --python-steps."""
    given = [word for name in given_settings(a) for word in (flag(name), str(getattr(a, name)))]
    return given + ["--data", a.data] * (a.data is not None) + ["--python-steps", str(a.python_steps)]


def run_worker(worker, argv):
    """(exit status, stdout, stderr) of a worker process; ended with this
    process's own end (an exception, a signal turned into SystemExit)."""
    cmd = [sys.executable, "-m", "microgpt_c", "bench", "--worker", worker] + argv
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out, err


def result(p, engine, mode, argv):
    """One engine's figures, from a worker process, with progress lines on stderr (stdout is the table)."""
    sys.stderr.write(f"{PROG}: {engine}:{mode} ...\n")
    status, out, err = run_worker(f"{engine}:{mode}:{os.getpid()}", argv)
    if status:
        p.error(f"the {engine}:{mode} run failed: {reason(err)}")
    r = json.loads(out)
    sys.stderr.write(f"{PROG}: {engine}:{mode} done, {r['steps']} steps, "
                     f"{decimal(statistics.median(r['step_seconds']) * 1e3)} ms/step\n")
    return r


def reason(stderr):
    """What a failed worker said: the last line of its stderr, without its program name."""
    lines = stderr.strip().splitlines() or ["no message"]
    return lines[-1].removeprefix(f"{PROG}: error: ")


def check(a):
    """Everything that can be checked before a worker starts: a ValueError or MemoryError."""
    cfg, schedule = settings(a)
    steps = schedule.steps
    if steps < 1:
        raise ValueError(f"--steps must be 1 or more to time a step, not {steps}")
    if a.python_steps < 1:
        raise ValueError(f"--python-steps must be 1 or more, not {a.python_steps}")
    check_paths(inputs=[("--data", a.data)], outputs=[("--json", a.json)])
    docs = load_docs(a.data)
    try:
        split(docs, schedule.val_docs)
    except ValueError as e:
        raise ValueError(flagged(str(e))) from None
    for engine, mode in a.engines:
        require(engine)
        memory.check(cfg, docs, Tokenizer(docs), engine, mode)


def decimal(x, digits=4):
    """x to this many significant digits, in plain decimals (36,020, not 3.602e+04)."""
    return f"{x:,.{max(0, digits - 1 - math.floor(math.log10(abs(x))))}f}" if x else "0"


def nodes(r):
    """The graph nodes/step cell: the C engine's whole-document kernel builds
    one node (the loss), which says nothing of its work; torch's graph is its
    own."""
    if r["engine"] == "c":
        return "kernel"
    return "-" if r["nodes_per_step"] is None else f"{r['nodes_per_step']:,.0f}"


def row(r, base):
    ms = statistics.median(r["step_seconds"]) * 1e3
    speedup = statistics.median(base["step_seconds"]) * 1e3 / ms
    common = min(r["steps"], base["steps"])
    if r is base:
        same = "(baseline)"
    elif r["losses"][:common] == base["losses"][:common]:
        same = f"yes, {common} steps"
    else:
        diff = max(abs(x - y) for x, y in zip(r["losses"], base["losses"][:common]))
        same = f"no, by {diff:.1e}"
    speedup = f"{speedup:,.0f}x" if speedup >= 10 else f"{speedup:.2g}x"
    return [f"{r['engine']}:{r['mode']}", f"{r['steps']}", decimal(ms), speedup, nodes(r), f"{r['peak_rss_mb']:.0f}",
            f"{r['losses'][-1]:.4f} @ {r['steps']}", same]


PROG = "python -m microgpt_c bench"
WIDTH = 100  # the table and its notes fit this many columns


def parser(p):
    p.description = __doc__
    add_settings(p, "the run to time")
    p.add_argument("--python-steps", type=int, default=30,
                   help="the pure-Python engine runs only the first N steps of the same schedule "
                        "(default: %(default)s)")
    p.add_argument("--engines", type=engines, default=",".join(DEFAULT), metavar="LIST",
                   help="engine:mode pairs, comma-separated; the first is the baseline for the speedup "
                        "(default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="write the raw figures here (default: none)")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    return p


def main(p, a):
    if a.worker:
        return worker(p, a)
    try:
        check(a)
    except (ValueError, MemoryError) as e:
        p.error(message(e))

    # a stop signal ends this process through SystemExit, so that run_worker ends the worker too
    with handling((signal.SIGTERM, signal.SIGHUP), lambda signum, frame: sys.exit(128 + signum)):
        results = [result(p, engine, mode, worker_flags(a)) for engine, mode in a.engines]
    base = results[0]
    name = f"{base['engine']}:{base['mode']}"
    rows = [["engine:mode", "steps", "ms/step", "speedup", "graph nodes/step", "RSS MB", "loss @ step",
             "same losses"]]
    rows += [row(r, base) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i in (0, 7) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    steps = settings(a)[1].steps
    python = (f" The pure-Python engine runs the first {min(a.python_steps, steps)} steps of the same "
              f"{steps}-step schedule." if ("python", "exact") in a.engines else "")
    print(textwrap.fill(f"ms/step: the median over each engine's steps; speedup: {name}'s median over this one's; "
                        f"graph nodes/step: the scalar nodes (values with a gradient) one training step builds, "
                        f"where the C engine runs a whole-document kernel that builds one, the loss; RSS: the "
                        f"worker's peak; loss @ step: the loss of the last step each engine ran; same losses: bit "
                        f"for bit equal to {name}'s over the steps both ran, or the largest difference.{python}",
                        WIDTH))
    if a.json:
        try:
            atomic_write(a.json, lambda f: f.write(json.dumps(results).encode()))
        except OSError as e:
            p.error(f"cannot write {a.json}: {e.strerror or e}")
