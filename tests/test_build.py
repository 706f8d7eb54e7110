"""How the package is built and installed: a checkout without an install
says what to do; the wheel is one abi3 wheel that installs and runs the
reference's default run where there is no C compiler; clang builds the engine
to gcc's bits, with and without the CPU-specific clones (csrc/clones.h)."""
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile

import numpy as np
import pytest
from conftest import GOLDEN, REPO, package_built, result_lines

BUILT = shutil.ignore_patterns("*.so", "*.pyd", "__pycache__")  # left by an in-place (editable) build


def run(cmd, **kw):
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=600, **kw)
    assert r.returncode == 0, f"{cmd}:\n{r.stdout[-3000:]}{r.stderr[-3000:]}"
    return r.stdout


def test_a_checkout_without_an_install_says_to_install(tmp_path):
    """python -m microgpt_c, or import microgpt_c, from the source folder with
    a Python that has no install of it (-S: no site-packages, where an install,
    editable or not, would give the compiled engine): one line, not a traceback."""
    shutil.copytree(os.path.join(REPO, "microgpt_c"), tmp_path / "microgpt_c", ignore=BUILT)
    r = subprocess.run([sys.executable, "-E", "-S", "-m", "microgpt_c"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    [line] = r.stderr.splitlines()
    assert line.startswith("python -m microgpt_c: error: the compiled engine") and "`pip install .`" in line
    assert "activate the venv" in line
    r = subprocess.run([sys.executable, "-E", "-S", "-c", "import microgpt_c"], cwd=tmp_path, capture_output=True,
                       text=True)
    assert r.returncode == 1 and r.stderr.splitlines()[-1] == "ImportError: " + line.split(": error: ")[1]


@pytest.mark.slow
def test_the_wheel_installs_and_runs_without_a_compiler(tmp_path):
    """pip wheel gives one wheel, tagged for CPython's stable ABI (3.9 on),
    with the engine built for it; a fresh venv installs it (its dependencies
    from the index, as wheels) with no C compiler on PATH, and the default run
    prints the reference's lines."""
    src = tmp_path / "src"  # the files a source distribution has, without an earlier build's
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy(os.path.join(REPO, name), src / name)
    for name in ("csrc", "microgpt_c"):
        shutil.copytree(os.path.join(REPO, name), src / name, ignore=BUILT)
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp_path / "dist", src])
    [wheel] = os.listdir(tmp_path / "dist")
    plat = re.sub(r"[-.]", "_", sysconfig.get_platform())
    assert re.fullmatch(rf"microgpt_c-[^-]+-cp39-abi3-{plat}\.whl", wheel), wheel
    assert "microgpt_c/_engine.abi3.so" in zipfile.ZipFile(tmp_path / "dist" / wheel).namelist()

    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PATH=str(venv / "bin"), CC="/nonexistent")  # the venv's python and pip, nothing else
    assert not [cc for cc in ("cc", "gcc", "clang", "c99") if shutil.which(cc, path=env["PATH"])]
    py = venv / "bin" / "python"
    run([py, "-m", "pip", "install", "--only-binary", ":all:", tmp_path / "dist" / wheel], env=env)
    out = run([py, "-m", "microgpt_c"], env=env, cwd=tmp_path)  # no microgpt_c folder here
    with open(GOLDEN) as f:
        assert result_lines(out.splitlines()) == f.read().splitlines()


# Both modes' losses and final parameters after 30 steps, as float64 bits, and
# the file of the engine that ran (fast mode runs the AVX2 clones, exact mode
# Adam's FMA clone, where the build has them and the CPU can).
TRAINED = """import json, numpy as np, microgpt_c._engine as e
from microgpt_c import Run
out = {"engine": e.__file__}
for mode in ("exact", "fast"):
    run = Run(steps=30, mode=mode)
    out[mode] = np.asarray(run.train() + list(run.E.param_values()), dtype=np.float64).view(np.uint64).tolist()
print(json.dumps(out))"""
CLANG = shutil.which("clang")


def clang_major():
    return int(run([CLANG, "-dumpversion"]).split(".")[0])


@pytest.mark.slow
@pytest.mark.skipif(CLANG is None, reason="clang is not installed (.ci/run installs Debian's clang)")
@pytest.mark.parametrize("clones", [True, False], ids=["clones", "no-clones"])
def test_clang_builds_the_engine_to_the_installed_builds_bits(tmp_path, clones):
    """The engine built by clang (no warning under -Wall, with the build's
    flags: no FP contraction, which clang does by default, nor builtin pow),
    with the clones or -DMG_NO_CLONES, trains exact mode to the same bits as
    the installed build (gcc's, with the clones where they exist), and fast
    mode, whose backward and Adam may fuse multiply-adds where the CPU has
    FMA, within 1e-12 of it."""
    flags = "-Wall -Werror" + ("" if clones else " -DMG_NO_CLONES")
    root = package_built(tmp_path, CC=CLANG, MICROGPT_CFLAGS=flags)
    [so] = (root / "microgpt_c").glob("_engine*.so")
    binary = so.read_bytes()
    assert b"clang version" in binary  # clang's mark in .comment: it compiled the engine
    can_clone = platform.machine() == "x86_64" and platform.libc_ver()[0] == "glibc" and clang_major() >= 14
    assert (b".avx2" in binary) == (clones and can_clone)  # clones.h: as asked, where they exist
    ours = json.loads(run([sys.executable, "-c", TRAINED], cwd=tmp_path, env=dict(os.environ, PYTHONPATH=str(root))))
    installed = json.loads(run([sys.executable, "-c", TRAINED], cwd=tmp_path))
    assert ours.pop("engine") == str(so) and installed.pop("engine") != str(so)
    assert ours["exact"] == installed["exact"]
    fast = [np.asarray(r["fast"], dtype=np.uint64).view(np.float64) for r in (ours, installed)]
    assert np.allclose(fast[0], fast[1], rtol=1e-12, atol=1e-15)
