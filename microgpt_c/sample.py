"""python -m microgpt_c sample --load PATH: samples from a checkpoint written by --save."""
import random

from .cli import add_engine, add_sampling, check_sampling_flags, flagged, message, print_samples, require_numpy
from .files import check_paths
from .run import Run


def parser(p):
    p.description = "Sample documents (names, for the packaged data) from a checkpoint written by --save."
    p.add_argument("--load", metavar="PATH", required=True, help="a checkpoint written by --save")
    add_sampling(p)
    p.add_argument("--seed", type=int, help="start a new random stream from this seed "
                                            "(default: go on with the checkpoint's random generator)")
    p.add_argument("--prefix", default="", metavar="TEXT", help="start every sample with TEXT (default: none)")
    add_engine(p, modes=False)
    return p


def main(p, a):
    try:
        check_paths(inputs=[("--load", a.load)])
        check_sampling_flags(a)
        require_numpy("reading a checkpoint")
        run = Run.load(a.load, a.engine)
        if a.seed is not None:
            run.rng = random.Random(a.seed)
        run.samples(0, a.temperature, a.prefix)  # the prefix checked before the first name
    except ValueError as e:
        p.error(flagged(str(e), ("prefix",)))  # block_size is the checkpoint's, not a flag given
    except MemoryError as e:
        p.error(message(e))
    print_samples(p, run, a, a.prefix)
