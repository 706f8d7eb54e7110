"""python -m microgpt_c [COMMAND] ...: the main job (train.py: train, then
sample) or, with a command first, that command's module (COMMANDS). Every
error a command does not report itself is one line here."""
import importlib
import os
import sys

from . import memory
from .cli import PROG, memory_message

# python -m microgpt_c [COMMAND]: each command's module, whose main(argv) takes the rest
COMMANDS = {None: "train", "sample": "sample", "attention": "attention", "bench": "bench", "check": "check",
            "trace": "trace"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    memory.limit_blas_threads()
    try:
        command = argv[0] if argv and argv[0] in COMMANDS else None  # none: train, the main job
        module = importlib.import_module(f".{COMMANDS[command]}", __package__)
        return module.main(argv[1:] if command else argv)
    except KeyboardInterrupt:  # Ctrl-C outside training, which stops cleanly on its own
        sys.stderr.write(f"{PROG}: interrupted\n")
        sys.exit(130)
    except MemoryError as e:  # what the estimate before training let through (a checkpoint stays as it was)
        sys.stderr.write(f"{PROG}: error: {memory_message(e)}\n")
        sys.exit(2)
    except BrokenPipeError:  # the reader went away (| head): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no error at exit's flush
        sys.exit(1)
    except OSError as e:  # the output cannot be written (a full disk, /dev/full): every file error else is checked
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.stderr.write(f"{PROG}: error: cannot write the output: {e.strerror or e}\n")
        sys.exit(2)


if __name__ == "__main__":
    main()
