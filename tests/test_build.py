"""How the package is built and installed: a checkout without an install
says what to do; the wheel is one abi3 wheel that installs and runs the
reference's default run where there is no C compiler; clang builds the engine
to gcc's bits, with and without the CPU-specific clones (csrc/clones.h)."""
import os
import shutil
import subprocess
import sys

from conftest import REPO

BUILT = shutil.ignore_patterns("*.so", "*.pyd", "__pycache__")  # left by an in-place (editable) build


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
