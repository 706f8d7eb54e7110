"""cffi out-of-line API mode: compiles csrc/microgpt.c, adam.c and shuffle.c into
microgpt_c._engine.

The header is the cdef. Exact mode relies on every + and * being one correctly
rounded IEEE double operation (no fast-math, no FP contraction) and on pow, exp
and log being the C library's, as in Python: without -fno-builtin-*, GCC turns
pow(x, -1) into 1/x, which glibc's pow does not always equal."""
import os

from cffi import FFI

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "microgpt.h")) as f:
    cdef = f.read()
with open(os.path.join(here, "doc_fast.h")) as f:
    cdef += f.read()

ffibuilder = FFI()
ffibuilder.cdef(cdef)
ffibuilder.set_source(
    "microgpt_c._engine",
    '#include "microgpt.h"\n#include "doc_fast.h"',
    sources=["csrc/microgpt.c", "csrc/adam.c", "csrc/shuffle.c", "csrc/doc_fast.c"],
    include_dirs=["csrc"],
    depends=["csrc/microgpt.h", "csrc/doc_fast.h", "csrc/build_ffi.py"],
    extra_compile_args=["-O3", "-std=c99", "-fno-fast-math", "-ffp-contract=off",
                        "-fno-builtin-pow", "-fno-builtin-exp", "-fno-builtin-log"]
    + os.environ.get("MICROGPT_CFLAGS", "").split(),
    extra_link_args=os.environ.get("MICROGPT_LDFLAGS", "").split(),
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
