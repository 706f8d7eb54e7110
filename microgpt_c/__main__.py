"""python -m microgpt_c: train microgpt on the packaged names, then sample."""
import argparse
import math
import sys
import time

from .model import Config, Run, load_docs


class Parser(argparse.ArgumentParser):
    def error(self, message):
        """Any bad input: one line, exit status 2, no traceback."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        from .bench import main as bench
        return bench(argv[1:])
    p = Parser(prog="python -m microgpt_c", description=__doc__)
    p.add_argument("--engine", choices=["c", "python"], default="c")
    p.add_argument("--mode", choices=["exact", "fast"], default="exact",
                   help="C engine: exact (the reference's graph, bit for bit) or fast (fused nodes)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--n-layer", type=int, default=1)
    p.add_argument("--n-embd", type=int, default=16)
    p.add_argument("--n-head", type=int, default=4)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--temperature", type=float, default=0.5)
    p.add_argument("--num-samples", type=int, default=20)
    p.add_argument("--data", metavar="PATH", help="one document per line (default: the packaged names)")
    p.add_argument("--log-every", type=int, default=1, metavar="K", help="print the loss every K steps")
    a = p.parse_args(argv)
    try:  # every input checked before anything is printed
        if not (a.temperature > 0 and math.isfinite(a.temperature)):
            raise ValueError(f"--temperature must be above 0, not {a.temperature}")
        if a.log_every < 1 or a.num_samples < 0:
            raise ValueError("--log-every must be 1 or more and --num-samples 0 or more")
        if a.engine == "python" and a.mode != "exact":
            raise ValueError("the pure-Python engine has exact mode only")
        run = Run(Config(a.n_layer, a.n_embd, a.n_head, a.block_size), load_docs(a.data),
                  a.seed, a.steps, a.lr, a.engine, a.mode)
    except ValueError as e:
        p.error(str(e))

    print(f"num docs: {len(run.docs)}")
    print(f"vocab size: {run.tok.vocab_size}")
    print(f"num params: {run.num_params}")
    elapsed = 0.0
    for step in range(a.steps):
        t0 = time.perf_counter()
        try:
            loss = run.train_step()
        except (ArithmeticError, ValueError) as e:  # the C engine refuses non-finite numbers
            loss = e
        elapsed += time.perf_counter() - t0
        if not isinstance(loss, float) or not math.isfinite(loss):
            p.error(f"training stopped at step {step + 1}, document {run.docs[step % len(run.docs)]!r}: "
                    f"{'the loss is ' if isinstance(loss, float) else ''}{loss}")
        if (step + 1) % a.log_every == 0 or step + 1 == a.steps:
            print(f"step {step + 1:4d} / {a.steps:4d} | loss {loss:.4f}", flush=True)
    print(f"training time: {elapsed:.2f}s ({elapsed / max(a.steps, 1) * 1000:.2f}ms/step)")
    for i, name in enumerate(run.sample(a.num_samples, a.temperature)):
        print(f"sample {i + 1:2d}: {name}")


if __name__ == "__main__":
    main()
