"""Threads, fork and handles: a store that two threads drive at once raises
instead of crashing, a fork leaves the child a working store, automatic
reclaiming counts every thread, and a stale Value's handle never names a
live node, however many resets. Each scenario runs in a child process, so a
crash is a failed test rather than a dead suite."""
import os
import subprocess
import sys
import textwrap

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(code, timeout=120):
    """Run code in a fresh interpreter (outside the repository, so that the
    installed package is imported); its stdout, or a failure naming how it
    ended (a signal is a crash, a timeout a hang)."""
    try:
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                           timeout=timeout, cwd=os.path.dirname(REPO))
    except subprocess.TimeoutExpired:
        pytest.fail(f"the child hung for {timeout} s")
    assert r.returncode == 0, f"exit status {r.returncode}: {r.stderr[-2000:]}"
    return r.stdout


# child code: step() from two threads at once, `times` each; every exception
# is the rule's RuntimeError (or one of `allowed`), never anything else
RACE = """
import sys, threading
sys.setswitchinterval(1e-6)  # switch threads as often as possible
def race(step, times, allowed=()):
    refused, bad = [], []
    def work():
        for _ in range(times):
            try:
                step()
            except RuntimeError as e:
                refused.append(str(e))
            except allowed:
                pass
            except BaseException as e:
                bad.append(repr(e))
    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads: t.start()
    for t in threads: t.join()
    assert not bad, bad[:3]
    assert all("one thread at a time" in e for e in refused), set(refused)
    return len(refused)
"""


def test_a_run_trained_from_two_threads_raises_never_crashes():
    out = child(RACE + textwrap.dedent("""
        from microgpt_c import Run
        for mode in ("exact", "fast"):
            run = Run(steps=4000, mode=mode)
            def step():
                run.train_step()
                run.sample(1)
            print(mode, race(step, 300))
    """))
    assert out.split()[::2] == ["exact", "fast"]


def test_the_rule_is_checked_on_entry():
    """Deterministically: a Run another thread is inside refuses a step,
    a sample and a save, and works again once that thread is out."""
    out = child("""
        import threading
        from microgpt_c import Run
        run, inside, leave = Run(steps=10), threading.Event(), threading.Event()
        def other():  # as if another thread were inside the Run
            with run._busy:
                inside.set()
                leave.wait()
        t = threading.Thread(target=other)
        t.start()
        inside.wait()
        for call in (run.train_step, lambda: run.sample(1), lambda: run.save("x.npz")):
            try:
                call()
            except RuntimeError as e:
                print(e)
        leave.set()
        t.join()
        run.train_step()
        print("ok")
    """)
    lines = out.splitlines()
    assert len(lines) == 4 and lines[-1] == "ok"
    assert all("one thread at a time" in line for line in lines[:3])


def test_engine_calls_from_two_threads_raise_never_crash():
    """The C store itself refuses a model-engine call while another thread
    is inside one (the Value API's calls take turns instead)."""
    child(RACE + textwrap.dedent("""
        from microgpt_c.cengine import CEngine
        E = CEngine()
        P = E.create_params({"w": (64, 64)}, [0.01] * 4096)
        def step():
            x = E.linear(E.linear((0, 64), P["w"]), P["w"])
            E.values(x)
            E.reset()
        race(step, 3000, ValueError)  # the other thread's reset dropped x: refused, never read
    """))


def test_fork_while_threads_use_the_default_store():
    child("""
        import os, threading
        from microgpt_c import Value
        stop = threading.Event()
        def work():
            while not stop.is_set():
                a = Value(1.5); b = (a * a + 2).tanh(); b.backward()
        threads = [threading.Thread(target=work) for _ in range(2)]
        for t in threads: t.start()
        try:
            for _ in range(40):
                pid = os.fork()
                if pid == 0:  # the child: one thread, the store's lock free
                    a = Value(2.0); c = a * 3; c.backward()
                    os._exit(0 if a.grad == 3.0 else 1)
                _, status = os.waitpid(pid, 0)
                assert status == 0, status
        finally:
            stop.set()
            for t in threads: t.join()
    """, timeout=120)


def test_reclaim_counts_threads_started_with_thread_module():
    child("""
        import _thread, threading, time
        from microgpt_c import Value, value
        value.RECLAIM_AT = 2000
        errors, done = [], threading.Event()
        def work():
            try:
                for _ in range(3000):
                    a = Value(0.5); b = (a * a + a).relu(); b.backward()
                    assert a.grad == 2.0
            except BaseException as e:
                errors.append(repr(e))
            done.set()
        _thread.start_new_thread(work, ())
        while not done.is_set():
            x = Value(1.0); (x * x).backward()
        assert not errors, errors
    """)


@pytest.mark.slow
def test_handles_never_alias_however_many_resets():
    """2**22 resets (the generations a handle can carry) later, a stale Value
    still refuses: the store says its handles are used up rather than reuse
    one. Training resets (no Value made) use no generation at all."""
    out = child("""
        from microgpt_c import Run
        from microgpt_c.cengine import CEngine, ffi, lib
        from microgpt_c.value import Value
        run = Run(steps=3)
        gen = run.E.v.generation
        for _ in range(3): run.train_step()
        assert run.E.v.generation == gen, "a training step used a generation"
        store = CEngine()
        old = Value(1.0, store)
        s = store.s
        while lib.mg_value_leaf(s, 1.0) >= 0 and lib.mg_value_reset(s, ffi.NULL, 0, ffi.NULL) == 0:
            pass  # a generation some handle was made in is retired
        print(store.v.generation, ffi.string(lib.mg_value_error()).decode())
        try:
            old.data
        except ValueError as e:
            print(e)
        new = Value(3.0, store)
        print(new.data)
    """, timeout=600)
    gen, *message = out.splitlines()[0].split(" ", 1)
    assert int(gen) == 2**22 - 1 and "handles" in message[0]
    assert "stale" in out.splitlines()[1]
    assert out.splitlines()[2] == "3.0"
