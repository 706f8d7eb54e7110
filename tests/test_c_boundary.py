"""The C boundary under abuse: random, mostly invalid calls either work or
raise; shapes and lengths are checked against what C knows; the suite runs
clean under AddressSanitizer + UBSan and under valgrind; memory stays flat
over a long run."""
import math
import os
import random
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO, package_built

from microgpt_c.cengine import CEngine, ffi, lib

ERRORS = {lib.MG_EARG, lib.MG_ENOMEM, lib.MG_EMATH}


def fuzz_calls(E, rng, n):
    """n random calls into the C API on store E; checks each one's outcome."""
    s, v = E.s, E.v  # the store (for calls) and its public view

    def some_id():  # mostly plausible, often not
        return rng.choice([rng.randrange(max(v.n, 1)), rng.randrange(-3, v.n + 3), -1, v.n, 2**31 - 1,
                           -2**31, rng.randrange(-2**31, 2**31)])

    def some_size():
        return rng.choice([rng.randrange(0, 20), rng.randrange(-5, 5), 2**31 - 1, -2**31, 2**30, v.n])

    def some_double():
        return rng.choice([rng.gauss(0, 3), 0.0, -0.0, 1e308, -1e-320, math.inf, -math.inf, math.nan,
                           rng.uniform(-800, 800)])

    def ids(k):
        return [some_id() for _ in range(k)]

    scalar = {  # op: (args, the value Python computes for it)
        "add": lambda a, b: v.val[a] + v.val[b], "mul": lambda a, b: v.val[a] * v.val[b],
        "log": lambda a: math.log(v.val[a]), "exp": lambda a: math.exp(v.val[a]),
        "relu": lambda a: max(0.0, v.val[a]), "tanh": lambda a: math.tanh(v.val[a]),
        "pow": lambda a, p: v.val[a] ** p,
    }
    for _ in range(n):
        kind = rng.choice(["leaf", "scalar", "vector", "attention", "mean", "nll", "tokens", "embed",
                           "backward", "reset", "params", "read", "write",
                           "adam", "null"])
        n0 = v.n
        if kind == "leaf":
            x = some_double()
            r = lib.mg_leaf(s, x)
            assert (r == n0 and v.val[r] == x) if math.isfinite(x) else r == lib.MG_EMATH
        elif kind == "scalar":
            op = rng.choice(sorted(scalar))
            args = (some_id(), some_id()) if op in ("add", "mul") else (some_id(),)
            args += (rng.choice([2.0, 0.5, -1.0, 3.0, -0.5, some_double()]),) if op == "pow" else ()
            r = getattr(lib, "mg_" + op)(s, *args)
            if r >= 0:  # the value is what Python's float arithmetic gives
                want = scalar[op](*args)
                assert isinstance(want, float) and r == n0 and v.val[r] == want
        elif kind == "vector":
            op = rng.choice(["vadd", "vrelu", "scale", "rmsnorm", "linear", "softmax"])
            args = {"vadd": (some_id(), some_id(), some_size()), "vrelu": (some_id(), some_size()),
                    "scale": (some_id(), some_size(), some_double()), "rmsnorm": (some_id(), some_size()),
                    "linear": (some_id(), some_size(), some_id(), some_size()),
                    "softmax": (some_id(), some_size())}[op]
            r = getattr(lib, "mg_" + op)(s, *args)
        elif kind == "attention":
            t = rng.randrange(0, 4)
            r = lib.mg_attention(s, some_id(), some_size(), rng.choice([1, 2, 4, 0, -1]),
                                 ids(t) or ffi.NULL, ids(t) or ffi.NULL, t)
        elif kind == "mean":
            k = rng.randrange(0, 4)
            r = lib.mg_mean(s, ids(k) or ffi.NULL, k)
        elif kind == "nll":
            r = lib.mg_nll(s, some_id(), some_size(), some_size())
        elif kind == "tokens":
            toks = [rng.randrange(-2, 30) for _ in range(rng.randrange(0, 6))]
            r = lib.mg_tokens(s, toks or ffi.NULL, len(toks))
        elif kind == "embed":
            r = lib.mg_embed(s, some_id(), some_size(), some_id(), some_size(), some_size(), some_size(),
                             some_size())
        elif kind == "backward":
            r = lib.mg_backward(s, some_id())
        elif kind == "reset":
            r = lib.mg_reset(s)
            assert r == 0 and v.n == v.nparams
        elif kind == "params":
            vals = [some_double() for _ in range(rng.randrange(0, 4))]
            r = lib.mg_params(s, vals or ffi.NULL, len(vals))
        elif kind == "read":  # a range within the nodes, or not: its length is the buffer's
            first, k = some_id(), rng.randrange(0, 80)
            r = lib.mg_read(s, first, k, rng.choice([0, 1]), ffi.new("double[]", max(k, 1)))
            assert (r == 0) == (0 <= first and first + k <= n0)
        elif kind == "write":  # lengths around the parameter count; numbers good and bad
            k = rng.choice([v.nparams, v.nparams - 1, v.nparams + 1, 0])
            vals = [rng.choice([0.25, -1.5, some_double()]) for _ in range(k)]
            r = lib.mg_write_params(s, vals or ffi.NULL, k, rng.choice([0, 1]))
            assert (r == 0) == (k == v.nparams and all(map(math.isfinite, vals)))
        elif kind == "adam":  # moments shorter, longer or as long as the parameters
            nm, nv = (rng.choice([v.nparams, v.nparams - 1, v.nparams + 1]) for _ in range(2))
            m, w = ffi.new("double[]", max(nm, 1)), ffi.new("double[]", max(nv, 1))
            r = lib.mg_adam_step(s, m, nm, w, nv, 0.01, 0.85, 0.99, 0.15, 0.01, 1e-8, ffi.NULL)
            assert (r >= 0) == (nm == nv == v.nparams)
            r = min(r, 0)
        else:
            r = rng.choice([lambda: lib.mg_add(ffi.NULL, 0, 0), lambda: lib.mg_backward(ffi.NULL, 0),
                            lambda: lib.mg_reset(ffi.NULL), lambda: lib.mg_tokens(ffi.NULL, ffi.NULL, 0)])()
            assert r == lib.MG_EARG
        assert r >= 0 or r in ERRORS
        if r < 0:
            assert ffi.string(v.err) or kind == "null"  # every error says what went wrong
            if kind not in ("backward", "reset"):
                assert v.n == n0  # a failed op leaves no nodes behind
        elif kind in ("scalar", "vector", "attention", "mean", "nll", "embed"):
            assert n0 <= r < v.n and all(math.isfinite(v.val[i]) for i in range(n0, v.n))


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_fuzz_the_c_api(mode):
    rng = random.Random(7)
    for _ in range(4):
        E = CEngine(mode)
        E.create_params({"w": (8, 8)}, np.random.default_rng(0).normal(0, 1, 64))
        fuzz_calls(E, rng, 2500)
    assert lib.mg_new(5) == ffi.NULL
    lib.mg_free(ffi.NULL)


def test_allocation_failure_is_memory_error():
    """A graph too big for the address space: MemoryError, and the store stays
    usable (run in a child with a 1 GB address-space limit)."""
    code = (
        "import resource, numpy as np\n"
        "from microgpt_c.cengine import CEngine, lib\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "E = CEngine()\n"
        "w = E.create_params({'w': (2048, 2048)}, np.zeros(2048 * 2048) + 0.5)['w']\n"
        "x = (w[0], 2048)\n"
        "try:\n"
        "    for _ in range(100): E.linear(x, w)\n"
        "    print('no error')\n"
        "except MemoryError as e:\n"
        "    E.reset(); print('MemoryError', E.linear((w[0], 8), (w[0], 4, 8)))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("MemoryError (")


def rss_after(mode, checkpoints):
    code = (
        "import microgpt_c as m, resource\n"
        f"run = m.Run(mode={mode!r}, steps={checkpoints[-1]})\n"
        "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * resource.getpagesize()\n"
        f"for n in {checkpoints!r}:\n"
        "    while run.step < n: run.train_step()\n"
        "    print(rss())\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return [int(x) for x in r.stdout.split()]


@pytest.mark.slow
def test_memory_is_flat_over_a_long_run():
    rss = rss_after("fast", [1000, 10000])
    print(f"RSS after 1,000 fast steps {rss[0] / 2**20:.1f} MB, after 10,000 {rss[1] / 2**20:.1f} MB")
    assert rss[1] <= 1.05 * rss[0], rss


def gcc_runtime(name):
    """The path of one of gcc's runtime libraries, or None: without gcc, or
    with a gcc that lacks it, -print-file-name echoes the bare name back."""
    if shutil.which("gcc") is None:
        return None
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


LIBASAN = gcc_runtime("libasan.so")
# The C-heavy tests, each C path once: every op's exact kernels against the
# pure-Python engine (values, gradients, math errors), the Value API, the
# whole-document kernels (exact and fast, odd shapes, a 1000-step run), and
# the fuzzed boundary. Tests that repeat these calls (gradient checks, finite
# differences) run only in the plain build.
SANITIZED = ["test_ops.py", "test_value.py", "test_c_boundary.py::test_fuzz_the_c_api",
             # exact mode's whole-document kernel against the full sort, at odd sizes
             "test_exact_fast.py::test_kernel_gradients_are_the_full_sorts[hd3]",
             "test_exact_fast.py::test_kernel_gradients_are_the_full_sorts[hd1]",
             "test_adam.py::test_adam_equals_reference_on_adversarial_inputs", "test_adam.py::test_adam_bad_input",
             # fast mode's whole-document kernel: against the reference's graph, training, and its refusals
             *(f"test_doc_fast.py::test_{t}" for t in (
                 "kernel_agrees_with_the_reference_graph", "training_stays_on_the_reference_trajectory",
                 "sampling_by_the_kernel_draws_the_reference_s_names", "logits_are_refused_unless_a_forward_made_them",
                 "bad_sizes_offsets_and_tokens_are_refused", "the_engine_raises_value_errors",
                 "a_non_finite_value_is_an_arithmetic_error")),
             # the Value API: fuzzed, and threads
             "test_value_api.py::test_fuzz_the_value_api", "test_value_api.py::test_threads_share_a_store",
             "test_value_api.py::test_reset_keep_keeps_values_and_grads_as_leaves",
             # shapes and lengths against what C knows; a store driven from two threads
             "test_c_boundary.py::test_engine_shapes_are_checked",
             "test_threads.py::test_engine_calls_from_two_threads_raise_never_crash"]


@pytest.mark.skipif(LIBASAN is None or gcc_runtime("libubsan.so") is None,
                    reason="gcc's AddressSanitizer and UBSan runtimes are not installed "
                           "(gcc -print-file-name=libasan.so or libubsan.so finds no file)")
@pytest.mark.slow
def test_suite_under_sanitizers(tmp_path):
    """The C-heavy tests with the engine built with ASan and UBSan (any error
    aborts the run). docs/robustness.md says what it covers."""
    root = package_built(  # at -O0: the quickest build, with nothing optimised out of the checks
        tmp_path, MICROGPT_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=all -DMG_NO_CLONES "
        "-fno-omit-frame-pointer -O0", MICROGPT_LDFLAGS="-fsanitize=address,undefined")
    env = dict(os.environ, PYTHONPATH=str(root), LD_PRELOAD=LIBASAN,
               ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="print_stacktrace=1")
    check = "import microgpt_c._engine as e; print(e.__file__)"
    where = subprocess.run([sys.executable, "-c", check], env=env, cwd=tmp_path, capture_output=True, text=True,
                           check=True)  # not in the checkout, whose folder an editable install builds into
    assert where.stdout.startswith(str(root))  # the sanitized build is the one under test
    tests = [os.path.join(REPO, "tests", t) for t in SANITIZED]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests,
                        "-k", "not test_random_graphs_finite_differences"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "ERROR: AddressSanitizer" not in r.stderr and "runtime error" not in r.stderr
    assert " passed" in r.stdout and "skipped" not in r.stdout.splitlines()[-1], r.stdout[-500:]


# A frame in the engine's C API, as valgrind prints it with line info
# ("mg_add (microgpt.c:301)") or without ("mg_add (in /.../_engine...so)"):
# the mg_* functions are exported, so named in any build. (Not "any frame in
# _engine*.so": that also holds cffi's module set-up, whose one allocation
# valgrind reports as definitely lost.)
ENGINE_FRAME = re.compile(r"^ +(?:at|by) 0x[0-9A-Fa-f]+: mg_\w+ \(", re.M)
BAD = ("Invalid read", "Invalid write", "definitely lost", "uninitialised", "Invalid free")


def engine_errors(log):
    """The records of a valgrind log that report an error and pass through the engine."""
    records, lines = [], []  # valgrind's report: records separated by empty lines
    for line in log.splitlines() + [""]:
        line = line.split("== ", 1)[-1] if line.startswith("==") else line
        if line.strip() and not re.fullmatch(r"==\d+==", line):
            lines.append(line)
        elif lines:
            records.append("\n".join(lines))
            lines = []
    return [rec for rec in records if ENGINE_FRAME.search(rec) and any(k in rec for k in BAD)]


def test_valgrind_filter_needs_no_line_info():
    with_lines = ("==7== Invalid read of size 8\n==7==    at 0x4A1: node (microgpt.c:120)\n"
                  "==7==    by 0x4A2: mg_add (microgpt.c:301)\n"
                  "==7==    by 0x4A3: _cffi_f_mg_add (microgpt_c._engine.c:9)\n")
    stripped = re.sub(r"\((microgpt|microgpt_c\._engine)\.c:\d+\)",
                      "(in /x/microgpt_c/_engine.cpython-311-x86_64-linux-gnu.so)", with_lines)
    cffi_init = ("==7== 104 bytes in 1 blocks are definitely lost in loss record 1 of 3\n"
                 "==7==    at 0x4B1: malloc (in /usr/libexec/valgrind/vgpreload_memcheck-amd64-linux.so)\n"
                 "==7==    by 0x4B2: _cffi_init (in /x/microgpt_c/_engine.cpython-311-x86_64-linux-gnu.so)\n")
    assert "(in /x/" in stripped and "microgpt.c" not in stripped
    for log in (with_lines, stripped):
        assert engine_errors(f"==7== \n{cffi_init}==7== \n{log}==7== \n") == [
            "\n".join(ln.split("== ", 1)[1] for ln in log.splitlines())]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_short_training_under_valgrind(tmp_path):
    """memcheck on a few steps of both modes (documents of one length twice,
    one cut to the block) and sampling: no invalid reads or writes, and
    no definite leaks from the engine once the stores are freed."""
    code = ("import gc, microgpt_c as m\n"
            "docs = ['emma', 'anna', 'christopherjohnathan']\n"  # lengths 4, 4 and over block_size
            "for mode in ('exact', 'fast'):\n"
            "    run = m.Run(docs=docs, mode=mode, steps=3)\n"
            "    run.train()\n"
            "    print(run.sample(2))\n"
            "del run; gc.collect()\n")
    log = tmp_path / "memcheck.txt"
    r = subprocess.run(["valgrind", "--leak-check=full", "--show-leak-kinds=definite", "--num-callers=30",
                        f"--log-file={log}", sys.executable, "-c", code], env=dict(os.environ, PYTHONMALLOC="malloc"),
                       capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stderr
    text = log.read_text()
    assert "ERROR SUMMARY" in text
    bad = engine_errors(text)
    assert not bad, "\n\n".join(bad)[:3000]
    assert r.stdout.count("[") == 2  # both runs sampled


def test_engine_shapes_are_checked():
    E = CEngine()
    P = E.create_params({"w": (4, 4)}, [0.1] * 16)
    x = E.linear((0, 4), P["w"])
    with pytest.raises(ValueError, match="as many values as keys"):
        E.attention(x, [x, x], [x], 2)
    with pytest.raises(ValueError, match="16 parameters"):
        E.set_param_values([0.0] * 15)
    with pytest.raises(ValueError, match="not finite"):
        E.set_param_values([float("nan")] * 16)
    from microgpt_c.model import Adam
    with pytest.raises(ValueError, match="moments"):
        E.adam_step(Adam(15, 0.01, 10), 0)
