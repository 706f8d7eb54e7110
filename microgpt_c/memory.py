"""What a run needs in memory, checked before it allocates anything: a run
that cannot fit is refused with both figures, rather than left to grow until
the kernel kills it (and whatever else it chooses)."""
import os
import resource

from .model import param_shapes
from .registry import ENGINES

# Nodes of one training step on a document of P positions (parameters
# excluded), by graph: docs/graph.md, section 4. d = n_embd, V = vocabulary,
# L = n_layer, H = n_head. (The C engine's whole-document kernels build none.)
GRAPHS = {
    "exact": lambda d, V, L, H, P: (P * (4 * d + 10 + V * (2 * d + 7)) + P + 3
                                    + L * (P * (24 * d * d + 22 * d + H + 12) + (4 * d + 9 * H) * P * (P + 1) // 2)),
}


def kernel_doubles(d, V, L, H, P):
    """Doubles the C engine's whole-document kernels (csrc/doc_fast.c,
    doc_exact.c) hold for a document of P positions: the forward's saved
    activations and the exact backward's scratch (an upper bound)."""
    wide = max(V, 4 * d, P)
    return P * (3 * V + 2 * wide + 40 * d + 8) + L * P * (12 * d + 4 + H + 2 * H * P) + 3 * d * d + 16 * wide


# What may limit this process's allocations: (what, resource limit, the use it counts in /proc/self/status)
LIMITS = (("the address-space limit (RLIMIT_AS)", resource.RLIMIT_AS, "VmSize"),
          ("the data-segment limit (RLIMIT_DATA)", resource.RLIMIT_DATA, "VmData"))


def size(n):
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:,.1f} {unit}"
        n /= 1024


def proc(path, field):
    """A "field: N kB" figure of a /proc file, in bytes; None where there is no such file."""
    try:
        with open(path) as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith(field + ":"))
    except (OSError, StopIteration, ValueError, IndexError):
        return None


def available():
    """(bytes this process may still allocate, what limits it), or None where
    nothing is known (no /proc/meminfo and no resource limit)."""
    figures = []
    free = proc("/proc/meminfo", "MemAvailable")
    if free is not None:
        figures.append((free, "available memory (MemAvailable)"))
    for what, limit, used in LIMITS:
        soft = resource.getrlimit(limit)[0]
        if soft != resource.RLIM_INFINITY:
            figures.append((max(soft - (proc("/proc/self/status", used) or 0), 0), f"room under {what}"))
    return min(figures) if figures else None


def check(cfg, docs, tok, engine, mode):
    """A MemoryError, before anything is allocated, if a run of cfg on engine
    and mode, training on docs (tokenized by tok), needs more memory (or
    nodes) than there is: the longest document's step is the largest."""
    info, vocab_size = ENGINES[engine], tok.vocab_size
    positions = min(cfg.block_size, max(map(len, docs)) + 1)
    params = sum(r * c for r, c in param_shapes(cfg, vocab_size).values())
    shape = cfg.n_embd, vocab_size, cfg.n_layer, cfg.n_head, positions
    nodes = GRAPHS[mode](*shape) if mode in info.node_bytes else 0
    doubles = kernel_doubles(*shape) if info.kernel else 0
    what = f"{params:,} parameters with Adam's moments, " + (
        f"{doubles:,} numbers" if info.kernel else f"{nodes:,} nodes") + f" for a step of {positions} positions"
    need, have = params * info.param_bytes + nodes * info.node_bytes.get(mode, 0) + 8 * doubles, available()
    if have is not None and need > have[0]:
        raise MemoryError(f"the run needs about {size(need)} ({what}), more than the {size(have[0])} of {have[1]}")
    if info.max_nodes is not None and params + nodes > info.max_nodes:
        raise MemoryError(f"the run needs {params + nodes:,} nodes ({what}), more than the {engine} engine's "
                          f"{info.max_nodes:,}")


def limit_blas_threads():
    """Under an address-space limit, one BLAS thread unless the user chose:
    numpy's OpenBLAS reserves a buffer per thread when it is imported, and
    ends the process (no exception) when it cannot. This program does no
    BLAS work."""
    if resource.getrlimit(resource.RLIMIT_AS)[0] != resource.RLIM_INFINITY:
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
