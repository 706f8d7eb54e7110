"""Writing output files without ever leaving half of one."""
import contextlib
import os


def temporary(path):
    return f"{path}.{os.getpid()}.tmp"


def atomic_write(path, write):
    """write(f) to a temporary file beside path, then rename it to path: a
    crash at any moment leaves the old file or the new one, never a mix."""
    tmp = temporary(path)
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


def check_writable(path):
    """A ValueError now, rather than an OSError after training, if path
    cannot be written."""
    if os.path.isdir(path):
        raise ValueError(f"cannot write {path}: it is a directory")
    try:
        open(temporary(path), "wb").close()
        os.remove(temporary(path))
    except OSError as e:
        raise ValueError(f"cannot write {path}: {e.strerror}") from None
