"""cffi out-of-line API mode: compiles csrc/ into microgpt_c._engine.

CORE is the reference engine alone (the node store, the reference's ops, its
backward): it compiles by itself (tests/test_core.py builds and trains it),
and the other files are the machinery around it, each proven equal to it.

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

CORE = ["csrc/core.h", "csrc/core.c"]
MACHINERY = ["csrc/api.c", "csrc/value.c", "csrc/adam.c", "csrc/shuffle.c", "csrc/doc_fast.c", "csrc/doc_back.c",
             "csrc/doc_exact.c"]
HEADERS = ["csrc/microgpt.h", "csrc/doc_fast.h", "csrc/doc.h", "csrc/doc_back.h", "csrc/product.h", "csrc/core.h",
           "csrc/machinery.h", "csrc/clones.h"]
FLAGS = ["-O3", "-std=c99", "-fno-fast-math", "-ffp-contract=off", "-fno-builtin-pow", "-fno-builtin-exp",
         "-fno-builtin-log"]

ffibuilder = FFI()
ffibuilder.cdef(cdef)
ffibuilder.set_source(
    "microgpt_c._engine",
    '#include "microgpt.h"\n#include "doc_fast.h"',
    sources=[f for f in CORE + MACHINERY if f.endswith(".c")],
    include_dirs=["csrc"],
    depends=HEADERS + ["csrc/build_ffi.py"],
    extra_compile_args=FLAGS + os.environ.get("MICROGPT_CFLAGS", "").split(),
    extra_link_args=os.environ.get("MICROGPT_LDFLAGS", "").split(),
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
