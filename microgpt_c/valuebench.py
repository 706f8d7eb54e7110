"""python -m microgpt_c bench value: micrograd's demo (an MLP(2, [16, 16, 1])
on two moons, SVM loss + L2, plain SGD) on each Value engine, each in a fresh
process; one table of ms/step, ns per node, nodes per step and peak RSS. The
training loop is the README's, so what is timed is what a user writes (the C
Value's default store drops the dead graphs itself, inside backward). The
floor row runs the loop on a Value that does no arithmetic: what any engine
that makes one Python object per node pays, whatever it computes."""
import argparse
import gc
import importlib
import importlib.util
import json
import math
import random
import resource
import statistics
import subprocess
import sys
import textwrap
import time


# engine name -> "module:class" of the Value it trains
ENGINES = {"c": "microgpt_c.value:Value", "python": "microgpt_c.pyengine:Value",
           "micrograd": "micrograd.engine:Value", "floor": "microgpt_c.valuebench:Floor"}


class Floor:
    """A Value that only makes its node, as the C Value's ops do (one object,
    its operands held) without the C call: no data, no gradients."""

    __slots__ = ("_handle", "_symbol", "_left", "_right")
    data = grad = property(lambda self: 0.0, lambda self, x: None)  # nothing to compute or keep

    def __init__(self, data=0.0):
        self._left = self._right = None

    def __add__(self, other=None):  # every op, relu (no other) too: the same slots written
        v = Floor.__new__(Floor)
        v._handle = 0
        v._symbol = "+"
        v._left = self
        v._right = other
        return v

    __radd__ = __mul__ = __rmul__ = relu = __add__

    def backward(self):
        pass


def moons(n, noise=0.1, seed=0):
    """n points on two interleaved half circles with gaussian noise, labels -1 and 1
    (what sklearn's make_moons draws, made here so nothing else is needed)."""
    rng = random.Random(seed)
    points = []
    for i in range(n):
        label = i % 2
        t = math.pi * rng.random()
        x, y = (math.cos(t), math.sin(t)) if label == 0 else (1 - math.cos(t), 0.5 - math.sin(t))
        points.append(([x + rng.gauss(0, noise), y + rng.gauss(0, noise)], 2 * label - 1))
    return points


class MLP:
    """micrograd's nn.MLP: layers of neurons w.x + b, relu on all but the last layer."""

    def __init__(self, V, nin, nouts, rng):
        sizes = [nin] + nouts
        self.layers = [[([V(rng.uniform(-1, 1)) for _ in range(a)], V(0.0)) for _ in range(b)]
                       for a, b in zip(sizes, sizes[1:])]

    def __call__(self, x):
        for k, layer in enumerate(self.layers):
            x = [sum((wi * xi for wi, xi in zip(w, x)), b) for w, b in layer]
            x = [xi.relu() for xi in x] if k < len(self.layers) - 1 else x
        return x[0]

    def parameters(self):
        return [p for layer in self.layers for w, b in layer for p in w + [b]]


def train(V, steps, points, seed=1337):
    """The demo's loop; yields (seconds, loss, the loss Value) per step."""
    model = MLP(V, 2, [16, 16, 1], random.Random(seed))
    params = model.parameters()
    for k in range(steps):
        t0 = time.perf_counter()
        inputs = [[V(x) for x in xs] for xs, _ in points]
        scores = [model(x) for x in inputs]
        losses = [(1 + -y * s).relu() for (_, y), s in zip(points, scores)]
        data_loss = sum(losses) * (1.0 / len(losses))
        reg_loss = 1e-4 * sum(p * p for p in params)
        loss = data_loss + reg_loss
        for p in params:
            p.grad = 0.0
        loss.backward()
        value = loss.data
        lr = 1.0 - 0.9 * k / 100
        for p in params:
            p.data -= lr * p.grad
        yield time.perf_counter() - t0, value, loss


def count_nodes(root):
    """Nodes of the graph below root, by micrograd's _prev."""
    seen, stack = {id(root)}, [root]
    while stack:
        for c in stack.pop()._prev:
            if id(c) not in seen:
                seen.add(id(c))
                stack.append(c)
    return len(seen)


def worker(a):
    module, cls = ENGINES[a.worker].split(":")
    V = getattr(importlib.import_module(module), cls)
    if not a.gc:
        gc.disable()
    times, losses, nodes = [], [], None
    for t, loss, root in train(V, a.steps, moons(a.points)):
        times.append(t)
        losses.append(loss)
        if nodes is None and hasattr(root, "_prev"):
            nodes = count_nodes(root)
    print(json.dumps({"engine": a.worker, "step_seconds": times, "losses": None if V is Floor else losses,
                      "nodes": nodes, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


PROG = "python -m microgpt_c bench value"


def run_worker(p, a, name, gc_on):
    """One engine's figures, from a fresh process (progress on stderr)."""
    sys.stderr.write(f"{PROG}: {name}, gc {'on' if gc_on else 'off'} ...\n")
    cmd = [sys.executable, "-m", "microgpt_c", "bench", "value", "--worker", name,
           "--steps", str(a.steps), "--points", str(a.points)] + (["--gc"] if gc_on else [])
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        p.error(f"the {name} run failed: {(r.stderr.strip().splitlines() or ['no message'])[-1]}")
    return json.loads(r.stdout)


def table(results, names, nodes):
    """The rows of the table: a header, then one per engine."""
    first = results[names[0], True]
    base = statistics.median(first["step_seconds"])
    rows = [["engine", "ms/step", "gc off", "mean", f"vs {names[0]}", "ns/node", "nodes/step", "RSS MB",
             "same losses"]]
    for name in names:
        r, off = results[name, True], results[name, False]
        ms = statistics.median(r["step_seconds"]) * 1e3
        if r["losses"] is None or first["losses"] is None:  # the floor computes nothing
            same = "-"
        elif r["losses"] == first["losses"]:
            same = "yes"
        else:
            same = f"no, by {max(abs(x - y) for x, y in zip(r['losses'], first['losses'])):.1e}"
        rows.append([name, f"{ms:.1f}", f"{statistics.median(off['step_seconds']) * 1e3:.1f}",
                     f"{statistics.mean(r['step_seconds']) * 1e3:.1f}", f"{ms / (base * 1e3):.2f}x",
                     f"{ms * 1e6 / nodes:.0f}" if nodes else "-", f"{nodes:,}" if nodes else "-",
                     f"{r['peak_rss_mb']:.0f}", same])
    return rows


def parser(p):
    p.description = __doc__
    p.add_argument("--steps", type=int, default=20, help="training steps per engine, at most the demo's 100 "
                   "(its learning rate falls to 0.1 by then) (default: %(default)s)")
    p.add_argument("--points", type=int, default=100, help="two-moons points (default: %(default)s)")
    p.add_argument("--gc", action="store_true", help=argparse.SUPPRESS)  # a worker's: the collector on
    p.add_argument("--engines", default=",".join(e for e, m in ENGINES.items()
                                                 if importlib.util.find_spec(m.split(".")[0])),
                   help="comma-separated, from " + ", ".join(ENGINES) + " (default: those installed: %(default)s)")
    p.add_argument("--worker", choices=list(ENGINES), help=argparse.SUPPRESS)
    return p


def main(p, a):
    if not 1 <= a.steps <= 100 or a.points < 1:
        p.error("--steps must be in [1, 100] and --points at least 1")
    if a.worker:
        return worker(a)
    names = a.engines.split(",")
    if not set(names) <= set(ENGINES):
        p.error(f"--engines: expected names from {', '.join(ENGINES)}")
    missing = [name for name in names if not importlib.util.find_spec(ENGINES[name].split(".")[0])]
    if missing:
        p.error(f"--engines: {', '.join(missing)} is not installed (pip install {' '.join(missing)})")
    results = {}  # (engine, gc on) -> its figures
    for name in names:
        for gc_on in (True, False):  # a user's loop has the collector on; published timings often off
            results[name, gc_on] = run_worker(p, a, name, gc_on)
    nodes = next((r["nodes"] for r in results.values() if r["nodes"]), None)
    rows = table(results, names, nodes)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) if i in (0, 8) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    print(textwrap.fill(
        f"{a.steps} steps of micrograd's demo on {a.points} points, each engine in a fresh process. ms/step: the "
        f"median step (forward, backward, update) with Python's garbage collector on, as a user's loop runs; gc "
        f"off: the same with it off, as micrograd's timings are often quoted; mean: with the occasional slow step "
        f"(the C default store reclaiming dead graphs); ns/node: the median step over the nodes it builds; vs "
        f"{names[0]}: the medians' ratio; same losses: bit for bit {names[0]}'s (micrograd's own backward walks "
        f"children from a set, so its sums can round differently). floor: the loop on a Value that makes its node "
        f"object and nothing else, which any engine with one Python object per node pays.", 100))
    if "c" in names and nodes:
        ns = {name: statistics.median(results[name, True]["step_seconds"]) * 1e9 / nodes for name in names}
        above = f" (here {ns['c'] - ns['floor']:,.0f} of its {ns['c']:,.0f} ns/node)" if "floor" in ns else ""
        print(textwrap.fill(
            f"What bounds the C Value: one C call per scalar op. Each +, * or tanh is a call through cffi (and "
            f"the store's lock), which costs far more than the arithmetic it does; that call is most of what the C "
            f"Value pays above the floor{above}. So it is a few times the pure-Python Value, not the >1000x of "
            f"`bench`, whose engine makes a whole vector op's nodes in one call.", 100))
