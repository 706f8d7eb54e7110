/* clones.h: MG_CLONES(targets...) gives a function builds for other CPU
   targets beside the default one, picked when the library loads (an ifunc
   resolver: GCC 6+ or clang 14+, on x86-64 with glibc). Elsewhere (macOS,
   ARM, musl, another compiler) it is nothing: the default build alone. Every
   build gives the same bits, as the flags of build_ffi.py keep each + and *
   its own rounding. -DMG_NO_CLONES builds the default alone anywhere
   (ThreadSanitizer cannot run a program whose resolver runs before it starts). */
#ifndef MG_CLONES_H
#define MG_CLONES_H
#include <stdint.h> /* defines __GLIBC__ on glibc */
#if defined(__x86_64__) && defined(__GLIBC__) && !defined(MG_NO_CLONES) && \
    (defined(__clang__) ? __clang_major__ >= 14 : defined(__GNUC__) && __GNUC__ >= 6)
#define MG_CLONES(...) __attribute__((target_clones(__VA_ARGS__)))
#else
#define MG_CLONES(...)
#endif
#endif
