"""python -m microgpt_c [COMMAND] ...: argparse subparsers, one per command
(cli.COMMANDS); with no command word, the main job (train: train, then
sample). Only the chosen command's module is imported, and only its parser
filled in: importing them all costs the main job ~37 ms. Every error a
command does not report itself is one line here."""
import importlib
import os
import sys

from . import memory
from .cli import COMMANDS, PROG, Parser, memory_message


def command(argv):
    """The command argv starts with (`bench value` before `bench`; train if
    none), and the words after it."""
    for name in sorted(COMMANDS, key=len, reverse=True):
        words = name.split()
        if argv[:len(words)] == words:
            return name, argv[len(words):]
    return "train", argv


def parsers(name):
    """argparse's parser, with a subparser for each command, and command name's
    module and subparser, the only one filled in."""
    top = Parser(prog=PROG)
    commands = top.add_subparsers(dest="command", required=True)
    subparsers = {c: commands.add_parser(c) for c in COMMANDS}
    module = importlib.import_module(f".{COMMANDS[name][0]}", __package__)
    return top, module, module.parser(subparsers[name])


def parse(argv):
    """The command argv asks for: its module, its parser and the flags it parsed."""
    name, rest = command(argv)
    top, module, p = parsers(name)
    a, unknown = top.parse_known_args([name, *rest])
    if unknown:  # the command's error, under its own name
        p.error(f"unrecognized arguments: {' '.join(unknown)}")
    return module, p, a


def main(argv=None):
    memory.limit_blas_threads()
    try:
        module, p, a = parse(sys.argv[1:] if argv is None else argv)
        return module.main(p, a)
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
