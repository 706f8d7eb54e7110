"""python -m microgpt_c, run as a user runs it (installed package, another
directory): the default run prints the reference's output."""
import os
import subprocess
import sys

import pytest

GOLDEN = os.path.join(os.path.dirname(__file__), "golden", "microgpt_seed42.txt")


def cli(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "microgpt_c", *args], cwd=cwd,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def result_lines(lines):
    return [ln for ln in lines if ln.startswith(("num ", "vocab ", "step ", "sample "))]


def test_default_run_matches_reference(tmp_path):
    out = cli("--log-every", "1", cwd=tmp_path)
    with open(GOLDEN) as f:
        assert result_lines(out) == f.read().splitlines()
    assert any(ln.startswith("training time: ") and ln.endswith("ms/step)") for ln in out)


@pytest.mark.parametrize("flags", [
    ["--seed", "7", "--steps", "5", "--n-embd", "8", "--n-head", "2", "--block-size", "6",
     "--temperature", "0.8", "--num-samples", "4", "--lr", "0.02"],
    ["--steps", "3", "--n-layer", "2", "--n-embd", "12", "--n-head", "3", "--num-samples", "3", "--data", "DATA"],
])
def test_engines_print_the_same(tmp_path, flags):
    (tmp_path / "d.txt").write_text("ab\n\n  héllo \nzz\nöa\n", encoding="utf-8")
    flags = [str(tmp_path / "d.txt") if f == "DATA" else f for f in flags]
    c = result_lines(cli("--engine", "c", *flags, cwd=tmp_path))
    py = result_lines(cli("--engine", "python", *flags, cwd=tmp_path))
    assert c == py
    assert len([ln for ln in c if ln.startswith("sample ")]) == int(flags[flags.index("--num-samples") + 1])


def test_log_every(tmp_path):
    steps = [ln for ln in cli("--steps", "10", "--log-every", "4", "--num-samples", "1", cwd=tmp_path)
             if ln.startswith("step ")]
    assert [ln[:14] for ln in steps] == ["step    4 /   ", "step    8 /   ", "step   10 /   "]


def test_fast_mode_run(tmp_path):
    out = cli("--mode", "fast", "--steps", "50", "--num-samples", "3", cwd=tmp_path)
    assert len([ln for ln in out if ln.startswith("step ")]) == 50
    assert len([ln for ln in out if ln.startswith("sample ")]) == 3


def test_bench_prints_the_table(tmp_path):
    out = cli("bench", "--steps", "20", "--python-steps", "2", "--json", str(tmp_path / "b.json"), cwd=tmp_path)
    rows = [ln.split() for ln in out]
    assert [r[:3] for r in rows[1:4]] == [["python", "exact", "2"], ["c", "exact", "20"], ["c", "fast", "20"]]
    assert rows[2][8:10] == ["yes,", "bit"]  # C exact's losses equal the pure-Python engine's
    import json
    figures = json.loads((tmp_path / "b.json").read_text())
    assert [len(f["step_seconds"]) for f in figures] == [2, 20, 20]
