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

/* MG_WIDE: a function of its own for CPUs with AVX2 and FMA, written with
   their intrinsics (fast mode's fused multiply-adds, 4-wide roots), called
   only where MG_HAVE_WIDE() (asked per call: a word the loader filled). GCC
   on x86-64; -DMG_NO_CLONES leaves it out (the sanitizer runs). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ >= 6 && !defined(MG_NO_CLONES)
#include <immintrin.h>
#define MG_WIDE_BUILD 1
#define MG_WIDE __attribute__((target("avx2,fma")))
#define MG_HAVE_WIDE() (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
#else
#define MG_WIDE
#define MG_HAVE_WIDE() 0
#endif
#endif
