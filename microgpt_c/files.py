"""Writing output files without ever leaving half of one, and without
replacing anything but a regular file."""
import contextlib
import errno
import os
import stat

KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
         (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))


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
        kind = next((name for test, name in KINDS if test(mode)), "not a file")
        raise OSError(errno.EEXIST, f"it is {kind}, not a regular file", path)
    return real


def temporary(path):
    return f"{path}.{os.getpid()}.tmp"


def atomic_write(path, write):
    """write(f) to a temporary file beside path's target, then rename it over
    the target: a crash at any moment leaves the old file or the new one,
    never a mix; a symlink at path stays a link, to the new file."""
    real = target(path)
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
    """A ValueError now, rather than an OSError after training, if path
    cannot be written."""
    try:
        tmp = temporary(target(path))
        open(tmp, "wb").close()
        os.remove(tmp)
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror}") from None
