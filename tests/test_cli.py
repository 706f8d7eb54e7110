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


def cli_fails(*args, cwd):
    r = subprocess.run([sys.executable, "-m", "microgpt_c", *args], cwd=cwd, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    return r.stdout, r.stderr


@pytest.mark.parametrize("args,says", [
    (["--data", "missing.txt"], "No such file"),
    (["--data", "."], "directory"),
    (["--data", "empty.txt"], "no documents"),
    (["--data", "blank.txt"], "no documents"),
    (["--data", "latin1.txt"], "not UTF-8"),
    (["--n-embd", "10"], "not a multiple of n_head"),
    (["--n-embd", "0"], "n_embd must be 1 or more"),
    (["--n-head", "0"], "n_head must be 1 or more"),
    (["--block-size", "0"], "block_size must be 1 or more"),
    (["--n-layer", "-1"], "n_layer must be 0 or more"),
    (["--steps", "-1"], "steps must be 0 or more"),
    (["--temperature", "0"], "--temperature must be above 0"),
    (["--temperature", "-0.5"], "--temperature must be above 0"),
    (["--engine", "python", "--mode", "fast"], "exact mode only"),
])
def test_bad_input_is_one_line_and_status_2(tmp_path, args, says):
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.txt").write_bytes(b"\n   \n\t\n")
    (tmp_path / "latin1.txt").write_bytes("zoë\n".encode("latin-1"))
    out, err = cli_fails(*args, cwd=tmp_path)
    assert out == ""  # nothing printed before the error
    assert says in err


@pytest.mark.parametrize("engine", ["c", "python"])
def test_non_finite_loss_stops_naming_step_and_document(tmp_path, engine):
    out, err = cli_fails("--engine", engine, "--lr", "1e9", "--steps", "40", "--n-embd", "8", "--n-head", "2",
                         cwd=tmp_path)
    assert "training stopped at step" in err and "document '" in err
    assert "sample" not in out


def test_tiny_long_and_unicode_documents(tmp_path):
    (tmp_path / "one.txt").write_text("a\n", encoding="utf-8")
    (tmp_path / "uni.txt").write_text("é\n北京\nżółć\n" + "長" * 40 + "\n", encoding="utf-8")
    one = result_lines(cli("--data", "one.txt", "--steps", "5", "--num-samples", "2", cwd=tmp_path))
    assert one[:3] == ["num docs: 1", "vocab size: 2", f"num params: {2 * 16 + 16 * 16 + 2 * 16 + 12 * 16 * 16}"]
    for engine in ("c", "python"):  # documents longer than the block are cut to it
        uni = result_lines(cli("--engine", engine, "--data", "uni.txt", "--steps", "4", "--block-size", "8",
                               "--num-samples", "3", cwd=tmp_path))
        assert uni[1] == "vocab size: 9"  # 8 characters and BOS
        if engine == "c":
            c_lines = uni
    assert uni == c_lines
