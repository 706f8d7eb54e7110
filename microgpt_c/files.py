"""Files in and out. Inputs: regular files and pipes ('-' is standard input),
read with a bound, so that a device or an endless pipe is an error rather
than a hang or all the memory. Outputs: every path a command will write is checked before anything
runs (not empty, not a directory, not one of its inputs or another output),
and written atomically, replacing nothing but a regular file."""
import contextlib
import errno
import glob
import os
import re
import stat

KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
MiB = 1 << 20
TEXT_LIMIT = 1024 * MiB  # a data file (the packaged names are 0.2 MiB)
CHECKPOINT_LIMIT = 1024 * MiB  # a checkpoint file, and what its members may inflate to together


def kind(mode):
    return next((name for test, name in KINDS if test(mode)), "not a file")


def read_bounded(path, limit, what="file"):
    """The bytes of the regular file or pipe at path ('-': standard input), at
    most limit of them, read in chunks; a ValueError naming the path for
    anything else (a missing file, a device, a directory, more than limit
    bytes, an empty path)."""
    if not path:
        raise ValueError(f"the {what}'s path is empty")
    name, fd = "standard input" if path == "-" else path, None
    try:
        # a named FIFO without a writer would block the open: opened without waiting, then read waiting
        fd = os.dup(0) if path == "-" else os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            raise ValueError(f"{name}: {kind(mode)}, not a regular file or a pipe")
        os.set_blocking(fd, True)
        with open(fd, "rb") as f:
            fd = None  # f closes it
            chunks, size = [], 0
            while size <= limit:  # in chunks: read(limit) would take limit bytes of memory at once
                chunk = f.read(min(MiB, limit + 1 - size))
                if not chunk:
                    break
                chunks.append(chunk)
                size += len(chunk)
            data = b"".join(chunks)
    except OSError as e:
        raise ValueError(f"{name}: {e.strerror or e}") from None
    finally:
        if fd is not None:
            os.close(fd)
    if len(data) > limit:
        raise ValueError(f"{name}: larger than the {limit:,} bytes a {what} may have")
    return data


def target(path):
    """Where writing path lands: its symlinks followed. An OSError if
    something other than a regular file is there (renaming over a device or
    a FIFO would replace it)."""
    real = os.path.realpath(path)
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        return real
    if not stat.S_ISREG(mode):
        raise OSError(errno.EEXIST, f"it is {kind(mode)}, not a regular file", path)
    return real


# A temporary file's name: the target's, this program's mark and the writer's pid. Only names of
# exactly this form are ever removed (a user's ck.npz.20240101.tmp is not one).
TEMPORARY = "{}.microgpt_c-{}.tmp"
PID = re.compile(r"[1-9][0-9]{0,8}")  # a pid os.kill takes (under 10**9 < 2**31)


def temporary(path):
    return TEMPORARY.format(path, os.getpid())


def remove_leftovers(real):
    """Temporary files of earlier writes to real whose process is gone (a
    save killed mid-write): removed by the next write to the same path."""
    prefix, suffix = TEMPORARY.format(real, "|").split("|")
    for tmp in glob.glob(glob.escape(prefix) + "*" + glob.escape(suffix)):
        pid = tmp[len(prefix):-len(suffix)]
        if not PID.fullmatch(pid) or int(pid) == os.getpid():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.remove(tmp)
        except OSError:
            pass  # alive, under another user


def atomic_write(path, write):
    """write(f) to a temporary file beside path's target, then rename it over
    the target: a crash at any moment leaves the old file or the new one,
    never a mix; a symlink at path stays a link, to the new file."""
    real = target(path)
    remove_leftovers(real)
    tmp = temporary(real)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, real)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_writable(path):
    """A ValueError now, rather than an OSError after the work, if path
    cannot be written."""
    try:
        tmp = temporary(target(path))
        open(tmp, "wb").close()
        os.remove(tmp)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror}") from None


def same(a, b):
    """Whether paths a and b name one file (links and hard links followed)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # one does not exist yet: then the real paths decided


def check_paths(inputs=(), outputs=()):
    """Every (flag, path) pair a command was given, checked before it runs: a
    path given is not empty; an output does not end in a separator, is not
    an input or another output, and can be written. A ValueError naming the
    flags."""
    for flag, path in (*inputs, *outputs):
        if path is not None and not path:
            raise ValueError(f"{flag} needs a path, not an empty string")
    outputs = [(flag, path) for flag, path in outputs if path is not None]
    inputs = [(flag, path) for flag, path in inputs if path is not None]
    for i, (flag, path) in enumerate(outputs):
        if path.endswith(os.sep) or (os.altsep and path.endswith(os.altsep)):
            raise ValueError(f"{flag} {path}: names a directory; give a file name")
        for other, other_path in inputs + outputs[:i]:
            if same(path, other_path):
                raise ValueError(f"{flag} {path} is the file {other} names: it would be overwritten")
        check_writable(path)
