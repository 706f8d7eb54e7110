"""What the tests share: the documents, the model sizes they run, bit patterns
and one way to read any engine's parameter gradients.

Test modules import these names (`from conftest import DOCS, bits`): pytest
puts this folder on sys.path when it loads this file."""
import contextlib
import gc
import io
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from microgpt_c import Config, load_docs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOLDEN = os.path.join(REPO, "tests", "golden", "microgpt_seed42.txt")  # the reference's default run
DOCS = load_docs()  # the packaged names, in file order
DEFAULT = Config()  # the reference's sizes
SMALL = Config(n_layer=2, n_embd=24, n_head=3, block_size=12)  # two layers, three heads
TINY = Config(n_layer=1, n_embd=8, n_head=2, block_size=6)  # quick on the pure-Python engine


def bits(x):
    """The float64 bit patterns of a number or a sequence, as a list: equal
    lists are equal to the last bit and the sign of zero."""
    return np.asarray(x, dtype=np.float64).view(np.uint64).tolist()


def result_lines(lines):
    """The lines of a run's output that the reference's (GOLDEN) has: no timings."""
    return [ln for ln in lines if ln.startswith(("num ", "vocab ", "step ", "sample "))]


def package_built(tmp_path, **env):
    """A copy of the package in tmp_path whose engine is built afresh from
    csrc/ with these environment variables (CC, MICROGPT_CFLAGS,
    MICROGPT_LDFLAGS): the folder to put first on PYTHONPATH."""
    build = tmp_path / "build"
    shutil.copytree(os.path.join(REPO, "csrc"), build / "csrc")
    r = subprocess.run([sys.executable, "-c", "import runpy; runpy.run_path('csrc/build_ffi.py')['ffibuilder']"
                        ".compile(tmpdir='.')"], cwd=build, env=dict(os.environ, **env), capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    root = tmp_path / "pkg"
    shutil.copytree(os.path.join(REPO, "microgpt_c"), root / "microgpt_c",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for so in (build / "microgpt_c").glob("_engine*.so"):
        shutil.copy(so, root / "microgpt_c")
    return root


def run_main(*args):
    """python -m microgpt_c ARGS in this process: (exit status, stdout, stderr)."""
    from microgpt_c.__main__ import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main([str(a) for a in args]) or 0
        except SystemExit as e:
            status = e.code or 0
    return status, out.getvalue(), err.getvalue()


def grads(E):
    """A float64 array of the gradients of engine E's parameters (after
    E.backward), flat in creation order, read through the engine interface
    (so on any engine); leaves them zero."""
    g = E.param_grads()
    E.zero_grads()
    return g


@pytest.fixture(autouse=True)
def no_cyclic_gc():
    """Each test runs with Python's cyclic garbage collector off. The
    pure-Python engine's graphs hold no cycles (a node points only to earlier
    nodes), so reference counting frees them; the collector would only walk
    them again and again, about two thirds of that engine's time. Numbers do
    not depend on it. Anything cyclic a test leaves is collected once it is on
    again."""
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


# the command line's tests (test_cli.py, test_files.py, ...)
PROG = "python -m microgpt_c"


def one_line_error(status, out, err, prog=PROG):
    """The CLI's contract for bad input: status 2, one line on stderr, nothing
    on stdout (it is checked before training). Returns the message."""
    assert (status, out) == (2, ""), (status, out, err)
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"{prog}: error: "), err
    return err[len(f"{prog}: error: "):-1]


SMALL_ARGS = ["--steps", "2", "--n-embd", "8", "--n-head", "2", "--num-samples", "1"]  # a quick run's flags
TINY_ARGS = ["--steps", "3", "--n-embd", "8", "--n-head", "2", "--num-samples", "2"]
