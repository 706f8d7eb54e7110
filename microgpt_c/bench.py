"""python -m microgpt_c bench: the same training (same seed, same documents)
on each engine and mode (by default the pure-Python engine, the C engine in
exact mode and in fast mode), each in a fresh process; one table of per-step
time, speedup over the first engine listed, graph size and memory."""
import argparse
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import time

from .__main__ import Parser
from .model import Config, Run, load_docs

ENGINES = [("python", "exact"), ("c", "exact"), ("c", "fast"), ("torch", "eager")]
# PyTorch (float64, eager, CPU) is an outside anchor, measured when installed
DEFAULT = ENGINES if importlib.util.find_spec("torch") else ENGINES[:3]


def engines(text):
    """--engines: comma-separated engine:mode pairs."""
    pairs = [tuple(item.split(":")) for item in text.split(",")]
    if not all(pair in ENGINES for pair in pairs):
        raise argparse.ArgumentTypeError(f"{text!r}: expected engine:mode pairs from "
                                         f"{', '.join(map(':'.join, ENGINES))}, comma-separated")
    return pairs


def measure(engine, mode, steps, schedule, a):
    """Train `steps` steps of a `schedule`-step run; per-step figures."""
    cfg = Config(a.n_layer, a.n_embd, a.n_head, a.block_size)
    run = Run(cfg, load_docs(a.data), a.seed, schedule, engine=engine, mode=mode)
    times, losses, nodes = [], [], []
    for _ in range(steps):
        t0 = time.perf_counter()
        losses.append(run.train_step())
        times.append(time.perf_counter() - t0)
        if engine == "c":
            nodes.append(run.E.v.n - run.E.v.nparams)
    if engine == "python":  # count Values in an untimed second run of the same steps
        nodes = count_python_nodes(cfg, steps, schedule, a)
    return {"engine": engine, "mode": mode, "steps": steps, "step_seconds": times, "losses": losses,
            "nodes_per_step": statistics.mean(nodes) if nodes else None,  # none: torch's own graph
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def count_python_nodes(cfg, steps, schedule, a):
    from . import pyengine

    created = [0]
    init = pyengine.Value.__init__

    def counting_init(self, *args):
        created[0] += 1
        init(self, *args)

    run = Run(cfg, load_docs(a.data), a.seed, schedule, engine="python")
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


def worker(a):
    engine, mode = a.worker.split(":")
    steps = a.python_steps if engine == "python" else a.steps
    print(json.dumps(measure(engine, mode, min(steps, a.steps), a.steps, a)))


def row(r, base):
    ms = statistics.median(r["step_seconds"]) * 1e3
    speedup = statistics.median(base["step_seconds"]) * 1e3 / ms
    common = min(r["steps"], base["steps"])
    if r is base:
        same = "(the baseline)"
    elif r["losses"][:common] == base["losses"][:common]:
        same = f"yes, bit for bit ({common} steps)"
    else:
        diff = max(abs(x - y) for x, y in zip(r["losses"], base["losses"][:common]))
        same = f"no, max |diff| {diff:.1e} ({common} steps)"
    speedup = f"{speedup:.0f}x" if speedup >= 10 else f"{speedup:.2g}x"
    return [r["engine"], r["mode"], f"{r['steps']}", f"{ms:.4g}", speedup,
            "-" if r["nodes_per_step"] is None else f"{r['nodes_per_step']:,.0f}", f"{r['peak_rss_mb']:.0f}", f"{r['losses'][-1]:.4f}", same]


def main(argv):
    p = Parser(prog="python -m microgpt_c bench", description=__doc__)
    p.add_argument("--steps", type=int, default=1000, help="training steps (the schedule's length)")
    p.add_argument("--python-steps", type=int, default=30,
                   help="the pure-Python engine runs only the first N steps of the same schedule")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--n-layer", type=int, default=1)
    p.add_argument("--n-embd", type=int, default=16)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--data", metavar="PATH")
    p.add_argument("--engines", type=engines, default=",".join(map(":".join, DEFAULT)), metavar="LIST",
                   help="engine:mode pairs, comma-separated; the first is the baseline for the speedup "
                        "(default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="write the raw figures here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)

    results = []
    for engine, mode in a.engines:
        cmd = [sys.executable, "-m", "microgpt_c", "bench", "--worker", f"{engine}:{mode}"] + argv
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out))
    base = results[0]
    name = f"{base['engine']}:{base['mode']}"
    head = ["engine", "mode", "steps", "ms/step", f"speedup vs {name}", "nodes/step", "peak RSS MB", "final loss",
            f"losses equal {name}'s"]
    rows = [head] + [row(r, base) for r in results]
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.rjust(w) if i in (2, 3, 4, 5, 6, 7) else c.ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    python = (f" The pure-Python engine runs the first {min(a.python_steps, a.steps)} steps of the same "
              f"{a.steps}-step schedule." if ("python", "exact") in a.engines else "")
    print(f"ms/step: median over each engine's steps; speedup: {name}'s median over this one's.{python} "
          f"The final loss is each engine's last step's.")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f)
