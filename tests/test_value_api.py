"""The Value API as a drop-in for micrograd: a training loop runs in flat
memory (with reset(keep=...), or with no added line on the default store,
which reclaims dead graphs), threads may share a store (checked against the
pure-Python Value, and under ThreadSanitizer), micrograd's graph attributes
(_prev, _op) on both engines, numbers only, and a fuzzer for the C entry
points."""
import math
import os
import random
import shutil
import subprocess
import sys
import threading

import numpy as np
import pytest
from hypothesis import assume, given, settings
from test_value import apply, as_python, bits, comparable, graphs, python_result

from microgpt_c import default_store
from microgpt_c.cengine import CEngine
from microgpt_c.pyengine import Value as PyValue
from microgpt_c.value import Value as CValue
from microgpt_c.value import _reclaim

ENGINES = [CValue, PyValue]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_reset_keep_keeps_values_and_grads_as_leaves():
    store = CEngine()
    w, b = CValue(0.5, store), CValue(-1.5, store)
    out = (w * 3 + b).tanh()
    out.backward()
    x = w * b
    want = [(v.data, v.grad) for v in (w, b, out)]
    store.reset(keep=[w, b, out, w])  # twice: still one node
    assert [(v.data, v.grad) for v in (w, b, out)] == want
    assert store.nodes() == 3 and len({w.id, b.id, out.id}) == 3
    assert out._prev == set() and out._op == ""  # a leaf now: its graph is gone
    for use in (lambda: x.data, lambda: x + 1, lambda: w * x, lambda: store.reset(keep=[x])):
        with pytest.raises(ValueError, match="stale"):
            use()
    w.grad = 0.0
    (w * w).backward()  # the kept Values work as leaves of new graphs
    assert w.grad == 1.0
    store.reset()
    with pytest.raises(ValueError, match="stale"):
        w.data
    with pytest.raises(ValueError, match="this store"):
        store.reset(keep=[CValue(1.0, CEngine())])


DEMO = """
import random, resource, sys
from microgpt_c import Value, default_store, value
from microgpt_c.cengine import CEngine
from microgpt_c.valuebench import MLP, moons
steps, checkpoints, how = int(sys.argv[1]), {int(x) for x in sys.argv[2].split(",")}, sys.argv[3]
value.RECLAIM_AT = 3000  # nodes: "auto" reclaims every few steps
store = CEngine() if how == "own" else default_store()
V = lambda x: Value(x, store)
points = moons(10)
model = MLP(V, 2, [4, 4, 1], random.Random(1))
params = model.parameters()
for k in range(1, steps + 1):
    scores = [model([V(x) for x in xs]) for xs, _ in points]
    loss = sum((1 + -y * s).relu() for (_, y), s in zip(points, scores)) * (1 / len(points))
    loss = loss + 1e-4 * sum(p * p for p in params)
    for p in params:
        p.grad = 0.0
    loss.backward()
    x = loss.data
    for p in params:
        p.data -= 0.1 * p.grad
    if how == "keep":
        store.reset(keep=params)
    if k in checkpoints:
        print(k, int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize(), store.nodes(), repr(x))
"""


def demo(steps, checkpoints, how):
    """micrograd's demo loop on a small MLP: "keep" ends each step with
    reset(keep=params), "auto" adds nothing (the default store reclaims), "own"
    adds nothing on a store of its own (which does not). RSS, nodes and loss
    at each checkpoint."""
    r = subprocess.run([sys.executable, "-c", DEMO, str(steps), ",".join(map(str, checkpoints)), how],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return [(int(rss), int(n), float(loss)) for _, rss, n, loss in map(str.split, r.stdout.splitlines())]


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
@pytest.mark.parametrize("how", ["keep", "auto"])
def test_training_loop_runs_in_flat_memory(how):
    (rss1, n1, loss1), (rss2, n2, loss2) = demo(2000, [200, 2000], how)
    print(f"{how}: RSS after 200 steps {rss1 / 2**20:.1f} MB, after 2,000 {rss2 / 2**20:.1f} MB")
    assert rss2 <= 1.05 * rss1
    if how == "keep":
        assert n1 == n2 == 4 * 3 + 4 * 5 + 5  # only the parameters are left after each step
    else:
        assert max(n1, n2) < 4 * 3000  # the last reclaim kept the live graph, the store grows to 4x that at most
    assert (loss1, loss2) == tuple(r[2] for r in demo(2000, [200, 2000], "own"))  # the same numbers either way


def test_without_the_line_an_own_store_keeps_every_graph():
    (_, m1, _), (_, m2, _) = demo(20, [2, 20], "own")
    assert m2 > 5 * m1


@pytest.mark.slow
@settings(max_examples=200, deadline=None)
@given(graphs)
def test_reclaiming_mid_graph_keeps_every_bit(graph):
    """Dropping the nodes no live Value reaches, halfway through building a
    random graph: the live Values keep their graphs whole (backward gives the
    pure-Python engine's bits), and a Value made before a reset stays stale."""
    leaves, steps = graph
    steps = comparable(leaves, steps)
    want = python_result(leaves, steps)
    assume(want is not None)
    store = CEngine()
    stale = CValue(1.0, store)
    store.reset()
    nodes = [CValue(x, store) for x in leaves]
    for k, (op, i, j, c, p) in enumerate(steps):
        if k == len(steps) // 2:
            nodes[-1].relu().relu()  # nodes no Value reaches
            before = store.nodes()
            _reclaim(type(nodes[0]))
            assert store.nodes() < before
        nodes.append(apply(op, nodes[i % len(nodes)], nodes[j % len(nodes)], c, p))
    nodes[-1].backward()
    assert bits([nodes[-1].data] + [v.grad for v in nodes[:len(leaves)]]) == bits(want)
    with pytest.raises(ValueError, match="stale"):
        stale.data


def walk(root):
    """micrograd's draw_dot trace: nodes collected by id() over _prev."""
    nodes, edges, stack = {}, set(), [root]
    while stack:
        v = stack.pop()
        if id(v) not in nodes:
            nodes[id(v)] = v
            for c in v._prev:
                edges.add((id(c), id(v)))
                stack.append(c)
    return nodes, edges


@pytest.mark.parametrize("V", ENGINES)
def test_prev_and_op_as_micrograd(V):
    a, b = V(2.0), V(-3.0)
    ab = a * b
    out = (ab + a).relu()
    nodes, edges = walk(out)
    assert len(nodes) == 5 and len(edges) == 5
    assert a in nodes.values() and b in nodes.values() and ab in nodes.values()
    assert sorted(v._op for v in nodes.values()) == ["", "", "*", "+", "ReLU"]
    assert a._prev == set() and ab._prev == {a, b}
    assert [(a**2)._op, (a**-1)._op, (a**0.5)._op, a.exp()._op, a.tanh()._op, (a + 1).log()._op] == \
        ["**2", "**-1", "**0.5", "exp", "tanh", "log"]
    # a number operand is the leaf the reference makes for it, the same object each time
    c = a + 1.5
    (leaf,) = c._prev - {a}
    assert leaf._op == "" and leaf.data == 1.5 and c._prev == {a, leaf}
    # derived ops show the reference's nodes: a - b is a + (b * -1)
    d = a - b
    (neg,) = d._prev - {a}
    assert d._op == "+" and neg._op == "*" and b in neg._prev
    assert sorted(x.data for x in neg._prev) == [-3.0, -1]
    assert len(walk(a / b)[0]) == 4  # a * b**-1


@pytest.mark.parametrize("V", ENGINES)
def test_numbers_only(V):
    for bad in ("1.5", None, 1j, [1.0], b"1"):
        with pytest.raises(TypeError, match="real number, not " + type(bad).__name__):
            V(bad)
    with pytest.raises(TypeError):
        V(1.0) + "2"
    with pytest.raises(TypeError):
        "2" * V(1.0)
    with pytest.raises(TypeError, match="'Value' and 'Value'"):
        V(2.0) ** V(3.0)
    with pytest.raises(TypeError, match="'Value' and 'str'"):
        V(2.0) ** "3"
    assert V(np.float64(1.5)).data == 1.5 and V(np.float32(0.5)).data == 0.5 and V(True).data == 1
    assert (V(1.0) * np.int64(3)).data == 3


def test_c_data_and_grad_setters_are_checked_alike():
    v = CValue(1.0)
    for attr in ("data", "grad"):
        for bad in (math.nan, math.inf, -math.inf):
            with pytest.raises(ArithmeticError, match=f"{attr} must be finite"):
                setattr(v, attr, bad)
        with pytest.raises(TypeError, match=f"{attr} must be a real number, not str"):
            setattr(v, attr, "2")
        setattr(v, attr, np.float64(2.5))
        assert getattr(v, attr) == 2.5
    assert (v.data, v.grad) == (2.5, 2.5)


def test_default_store_is_public_and_shared():
    assert default_store() is default_store() is CValue(1.0).store


def hammer(store, seed, graphs, out):
    """Build, backpropagate and read random graphs on a shared store; every
    outcome is compared with the pure-Python Value's."""
    rng = random.Random(seed)
    numbers = [rng.uniform(-3, 3) for _ in range(64)]
    try:
        for _ in range(graphs):
            leaves = rng.sample(numbers, rng.randint(1, 4))
            steps = [(rng.choice(["neg", "exp", "log", "relu", "tanh", "pow", "add", "sub", "mul", "div", "nadd",
                                  "nmul", "rsub", "rdiv"]), rng.randrange(10**6), rng.randrange(10**6),
                      rng.choice(numbers) or 1.0, rng.choice([2, 3, -1, 0.5, -2])) for _ in range(rng.randint(1, 25))]
            lv = as_python(store, leaves, steps)
            if lv:
                lv[0].grad = 0.25  # writes go through the lock too
                assert lv[0].grad == 0.25
        out.append("ok")
    except BaseException as e:  # reported by the main thread
        out.append(e)


@pytest.mark.parametrize("shared", ["default", "own"])
def test_threads_share_a_store(shared):
    store = default_store() if shared == "default" else CEngine()
    sys_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        out = []
        threads = [threading.Thread(target=hammer, args=(store, seed, 400, out)) for seed in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(sys_interval)
    assert out == ["ok"] * 4, [e for e in out if e != "ok"]


def test_threads_with_resets_get_right_numbers_or_stale_errors():
    """A thread that resets the store makes the others' Values stale: they
    raise, and every number they do get is right."""
    store, stop, out = CEngine(), threading.Event(), []

    def work(seed):
        rng, right = random.Random(seed), 0
        try:
            while not stop.is_set():
                x, y = rng.uniform(-2, 2), rng.uniform(-2, 2)
                try:
                    a, b = CValue(x, store), CValue(y, store)
                    c = (a * b + a).tanh()
                    c.backward()
                    got = [c.data, a.grad, b.grad]
                except ValueError as e:
                    assert "stale" in str(e)
                    continue
                pa, pb = PyValue(x), PyValue(y)
                pc = (pa * pb + pa).tanh()
                pc.backward()
                assert bits(got) == bits([pc.data, pa.grad, pb.grad])
                right += 1
            out.append(right)
        except BaseException as e:
            out.append(e)

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(3)]
    for t in threads:
        t.start()
    for _ in range(300):
        store.reset(keep=())  # the Value API's reset: it waits its turn
    stop.set()
    for t in threads:
        t.join()
    assert all(isinstance(r, int) for r in out), out


def test_fuzz_the_value_api():
    """Random calls with good, stale, foreign and garbage handles, and odd
    numbers: each works, with the value Python's float arithmetic gives, or
    fails with a code and a message, changing nothing."""
    from microgpt_c.cengine import ffi, lib

    rng = random.Random(11)
    stores = [CEngine(), CEngine("fast")]
    made = {id(E): [] for E in stores}  # (handle, value) of each store's live nodes
    numbers_ = [0.0, -0.0, 1.5, -2.0, 3.0, 1e308, -1e-320, math.inf, math.nan, 0.5, 700.0]
    unary = {"log": math.log, "exp": math.exp, "relu": lambda x: max(0.0, x), "tanh": math.tanh}
    for _ in range(6000):
        E = rng.choice(stores)
        s, live = E.s, made[id(E)]
        other = made[id(stores[0] if E is stores[1] else stores[1])]

        def handle():
            pool = [h for h, _ in live] or [0]
            return rng.choice([rng.choice(pool), rng.choice(pool), rng.choice([h for h, _ in other] or [1]),
                               -1, 0, 2**63 - 1, float(rng.getrandbits(53)), rng.choice(pool) + 1,
                               rng.choice(pool) + 0.5, rng.choice(pool) + 2.0**53, math.nan, math.inf, -0.0])

        value = {h: x for h, x in live}
        n0 = E.v.n
        unknown = "an operand this test does not track"  # (a child that a compaction kept, say)
        kind = rng.choice(["leaf", "add", "mul", "addc", "mulc", "pow", "unary", "get", "set", "backward", "back_one", "reset",
                           "compact"])
        want = None
        if kind == "leaf":
            c = rng.choice(numbers_)
            r, want = lib.mg_value_leaf(s, c), c
        elif kind in ("add", "mul"):
            a, b = handle(), handle()
            r = getattr(lib, "mg_value_" + kind)(s, a, b)
            want = unknown
            if a in value and b in value:
                want = value[a] + value[b] if kind == "add" else value[a] * value[b]
        elif kind in ("addc", "mulc"):
            a, c = handle(), rng.choice(numbers_)
            r, want = getattr(lib, "mg_value_" + kind)(s, a, c), unknown
            if a in value:
                want = value[a] + c if kind == "addc" else value[a] * c
        elif kind == "pow":
            a, p = handle(), rng.choice([2.0, -1.0, 0.5, 3.0] + numbers_)
            r, want = lib.mg_value_pow(s, a, p), unknown
            if a in value:
                try:
                    want = value[a] ** p
                except (ZeroDivisionError, OverflowError):
                    want = None
        elif kind == "unary":
            op, a = rng.choice(sorted(unary)), handle()
            r, want = getattr(lib, "mg_value_" + op)(s, a), unknown
            if a in value:
                try:
                    want = unary[op](value[a])
                except (ValueError, OverflowError):
                    want = None
        elif kind == "get":
            a = handle()
            grad = rng.randrange(2)
            x = lib.mg_value_get(s, a, grad)
            if a in value:
                assert lib.mg_value_failed() == 0 and (grad or x == value[a])
            continue
        elif kind == "set":
            a, c, grad = handle(), rng.choice(numbers_), rng.randrange(2)
            r = lib.mg_value_set(s, a, grad, c)
            if a in value or not math.isfinite(c):
                assert (r == 0) == (a in value and math.isfinite(c)), (a in value, c)
            if r == 0 and not grad:
                live[:] = [(h, c if h == a else x) for h, x in live]
            continue
        elif kind == "backward":
            r = lib.mg_value_backward(s, handle())
            continue  # fast mode refuses a second backward per graph: either outcome is fine
        elif kind == "back_one":  # micrograd's _backward: a live node's works, garbage is refused
            a = handle()
            r = lib.mg_value_back_one(s, a)
            assert r == 0 if a in value else r in (0, lib.MG_EARG) and (r == 0 or ffi.string(lib.mg_value_error()))
            continue
        elif kind == "compact":  # keeps what the roots reach; garbage handles stay as they are
            roots = rng.sample(live, min(len(live), rng.randrange(4)))
            garbage = [handle() for _ in range(rng.randrange(3))]
            handles = ffi.new("mg_handle[]", [h for h, _ in roots] + garbage)
            r = lib.mg_value_compact(s, handles, len(handles), lib.mg_view_of(s).n)
            if E.mode == "fast":
                assert r == lib.MG_EARG and E.v.n == n0
                continue
            assert r == 1 and E.v.n <= n0
            live[:] = [(handles[i], x) for i, (_, x) in enumerate(roots)]
            assert all(lib.mg_value_get(s, h, 0) == x for h, x in live)
            assert bits([handles[len(roots) + i] for i, g in enumerate(garbage) if g not in value]) == \
                bits([float(g) for g in garbage if g not in value])
            continue
        else:
            keep = rng.sample(live, min(len(live), rng.randrange(3)))
            kept = ffi.new("mg_handle[]", len(keep))
            r = lib.mg_value_reset(s, [h for h, _ in keep], len(keep), kept)
            assert r == 0
            live[:] = [(kept[i], x) for i, (_, x) in enumerate(keep)]
            assert all(lib.mg_value_get(s, h, 0) == x for h, x in live)
            continue
        if r >= 0 and want is unknown:
            continue
        if r >= 0:
            assert isinstance(want, float) and math.isfinite(want), (kind, want)
            assert lib.mg_value_get(s, r, 0) == want
            live.append((r, want))
            if kind in ("addc", "mulc"):  # the leaf made for the number is a node too
                live.append((r - 1, c))
        else:
            assert r in (lib.MG_EARG, lib.MG_EMATH) and ffi.string(lib.mg_value_error())
            assert E.v.n == n0  # a failed call leaves no node behind
            if want is not None and want is not unknown and not (isinstance(want, float) and math.isfinite(want)):
                assert r == lib.MG_EMATH


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_threads_under_thread_sanitizer(tmp_path):
    """tests/value_threads.c, four threads on one store with resets and
    compactions, built with the engine under -fsanitize=thread: no data race
    reported, no wrong value. Needs gcc with its ThreadSanitizer runtime."""
    csrc = os.path.join(REPO, "csrc")
    exe = tmp_path / "value_threads"
    build = subprocess.run(["gcc", "-fsanitize=thread", "-g", "-O1", "-std=gnu99", "-ffp-contract=off",
                            "-fno-builtin-pow", "-fno-builtin-exp", "-fno-builtin-log", "-DMG_NO_CLONES", "-I", csrc,
                            os.path.join(REPO, "tests", "value_threads.c"),
                            *(os.path.join(csrc, f) for f in sorted(os.listdir(csrc)) if f.endswith(".c")),
                            "-lm", "-o", str(exe)], capture_output=True, text=True)
    if build.returncode and ("tsan" in build.stderr or "sanitize" in build.stderr):
        pytest.skip("gcc has no ThreadSanitizer runtime: " + build.stderr[-200:])
    assert build.returncode == 0, build.stderr
    r = subprocess.run([str(exe)], capture_output=True, text=True, timeout=600,
                       env=dict(os.environ, TSAN_OPTIONS="halt_on_error=1"))
    assert "ThreadSanitizer" not in r.stderr, r.stderr[-3000:]
    assert r.returncode == 0 and r.stdout.strip() == "wrong values: 0", r.stdout + r.stderr[-2000:]


def test_bench_value_prints_the_table():
    r = subprocess.run([sys.executable, "-m", "microgpt_c", "bench", "value", "--steps", "3", "--points", "8",
                        "--engines", "c,python,floor"], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    head, c, python, floor = r.stdout.splitlines()[:4]
    assert head.split()[:4] == ["engine", "ms/step", "gc", "off"] and max(map(len, r.stdout.splitlines())) <= 100
    assert r.stderr.splitlines() == [f"python -m microgpt_c bench value: {e}, gc {g} ..."
                                     for e in ("c", "python", "floor") for g in ("on", "off")]
    # the demo's graph on 8 points: per point 2 inputs, 16 * 5 + 16 * 33 + 32 for the MLP, 5 for its loss term;
    # then the sum of 8 and its scaling, the 337 parameters, their squares and sum, its scaling, the total
    nodes = 8 * (2 + 16 * 5 + 16 * 33 + 32 + 5) + (8 + 1) + 2 + 337 + (337 + 338) + 2 + 1
    assert c.split()[0] == "c" and python.split()[0] == "python"
    assert f"{nodes:,}" in c and c.endswith("yes") and python.endswith("yes")
    assert floor.split()[0] == "floor" and floor.split()[-1] == "-"  # it computes nothing to compare
    bound = r.stdout[r.stdout.index("What bounds the C Value: one C call per scalar op."):]
    assert "through cffi" in bound and "ns/node)" in bound  # the share above the floor, measured
    bad = subprocess.run([sys.executable, "-m", "microgpt_c", "bench", "value", "--steps", "101"],
                         capture_output=True, text=True, timeout=60, cwd=REPO)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr
