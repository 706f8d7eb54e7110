/* adam.c: the reference's Adam step, fused over the flat parameter arrays,
   with its two powers (g**2 and v_hat**0.5) taken without calling pow when
   that cannot change a bit.

   Python's ** on floats calls the C library's pow, which is not correctly
   rounded: pow(x, 2) and x*x (and pow(x, 0.5) and sqrt(x)) can differ in the
   last bit when the exact result lies very near the midpoint between two
   doubles. (That is also why the build keeps -fno-builtin-pow: GCC would turn
   pow(x, 2.0) into x*x.)

   Why the cheap result is pow's, bit for bit. Let t be the exact x^2 or
   sqrt(x), y = x*x or sqrt(x) the correctly rounded t (IEEE * and sqrt).
   1. The residual is exact. r = fma(x, x, -y) = t - y for squares and
      r = fma(-y, y, x) = x - y*y for roots (sign of r = sign of t - y).
      Both are multiples of ulp(x)^2 (resp. ulp(y)^2) and smaller than 2^53 of
      them, so representable while those are no finer than the subnormal
      spacing 2^-1074: true when the square's y, or the root's x, is >= 2^-968
      (LO). fma rounds once (C99 7.12.13.1), so it returns them exactly.
   2. t lies within y's rounding interval, whose half-width on t's side is
      d/2, d = the spacing of doubles next to y on that side: ulp(y), but half
      of it below a power of two. ulp(t) = d. The test admits y only when
      t is at least m d from that midpoint: |t - y| <= (0.5 - m) d, m = 0.05,
      or 0.02 where |p ln x| <= 128 ln 2 (point 3). For roots
      t - y = r / (t + y) with t + y = 2y(1 +- 2^-54), so |r| <= (1 - 2m) y d
      gives the same. The rounding of those bounds (relative < 2^-52, d a power
      of two) takes under 2^-51 d off the margin. The midpoint on the far side
      is at least d/4 away.
   3. glibc's pow (since 2.28, the generic double-precision implementation
      that x86-64 and AArch64 use) rounds last a value near x^p. Its
      documented worst case, 0.54 ULP ~= ulperr_exp + 1024 ln2 relerr_log 2^53
      (e_pow.c), has two parts before the final 0.5: its exp's, 0.009 ULP
      (0.011 without a hardware fma), and its log's relative error, 1.3*2^-68
      (1.5*2^-68), carried through p ln x into the result's relative error,
      |p ln x| 1.5*2^-68 2^53 ULP, where 1024 ln 2 bounds |p ln x| for a finite
      result. So pow's value is within 0.011 + 0.033 < 0.045 ULP of x^p, and
      where |p ln x| <= 128 ln 2 (squares of |x| in [2^-64, 2^64), roots of x
      in [2^-256, 2^256): the gradients and moments of training) within
      0.011 + 0.0041 < 0.016 ULP. For the results admitted here (a square in
      [LO, HI), a root of a value in [LO, HI)) it takes its normal path, with
      no subnormal or overflow handling. A value that close to t, which is
      more than 0.05 d (0.02 d) from every midpoint, rounds to the same double
      as t: pow returns y.
   Zero: pow(+-0, 2) and pow(+-0, 0.5) are +0 (C99 F.9.4.4), so are +-0 * +-0;
   sqrt(-0) is -0, so a root is taken as sqrt(x) + 0.0, which is +0 for both zeros
   and sqrt(x) for every other x. Everything else
   (subnormal or tiny results, the top binade, inf, NaN, negative roots) and
   every value near a midpoint calls pow.

   Checked against glibc 2.36 on x86-64 (AMD EPYC) in the verifying mode, once, per
   power: 10^8 random inputs (4*10^7 of 1e-16..1, 3*10^7 log-uniform over the
   admitted range, 3*10^7 random bit patterns), 10% of the common ones taking
   pow; 4*10^7 (roots: 4.1*10^7) built within 2^-33 ULP of a midpoint, all
   taking pow; 10^7 within 0.1-0.17 ULP, 30% (roots: 51%) taking pow; 0
   differences from pow. The 0.02 margin (from 0.05 everywhere, issue 24),
   checked the same way at a margin of 0.015 (which admits more): 2*10^7 per
   power built within about 0.06 ULP of a midpoint, scaled over the 0.02
   tier and just outside it, and 3*10^7 random (1e-16..1, log-uniform over
   2^+-900, bit patterns); 0 differences from pow. tests/test_adam.py repeats
   this on 10^6 of each. Over the default run's first 300 steps 3.5% of the
   powers take pow (294 of 8,384 a step; 8.7% with 0.05 everywhere). */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include "microgpt.h"
#include "clones.h"
#ifdef __GLIBC__
#include <gnu/libc-version.h>
#endif
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define LO 0x1p-968
#define HI 0x1p1023

static uint64_t bits(double x) {
    uint64_t b;
    memcpy(&b, &x, sizeof b);
    return b;
}

/* The spacing of doubles next to y (positive, normal) on the side of r's
   sign. Branch-free, like the tests below, so that a block's tests vectorize. */
static inline double spacing(double y, double r) {
    uint64_t b = bits(y), e = b & 0x7ff0000000000000u;
    double u;
    memcpy(&u, &e, sizeof u);
    u *= 0x1p-52;
    return u - 0.5 * u * ((r < 0) & !(b & 0x000fffffffffffffu)); /* u, or u/2: exact */
}

/* y = x*x; 1 if y surely is pow(x, 2): at least 0.05 d from a midpoint, 0.02 d
   where |2 ln x| <= 128 ln 2 (points 2 and 3) */
static inline int64_t sure_square(double x, double y) {
    double r = fma(x, x, -y), ax = fabs(x);
    double half = ((ax >= 0x1p-64) & (ax < 0x1p64)) ? 0.48 : 0.45;
    return (x == 0) | ((y >= LO) & (y < HI) & (fabs(r) <= half * spacing(y, r)));
}

/* y = sqrt(x) + 0.0 (+0 for both zeros, as pow gives; sqrt(-0) is -0); 1 if
   y surely is pow(x, 0.5), the same margins (|ln x / 2| <= 128 ln 2) */
static inline int64_t sure_root(double x, double y) {
    double r = fma(-y, y, x), twice = ((x >= 0x1p-256) & (x < 0x1p256)) ? 0.96 : 0.9;
    return (x == 0) | ((x >= LO) & (x < HI) & (fabs(r) <= twice * y * spacing(y, r)));
}

static int32_t cheap_powers(void) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 28)) \
    && (defined(__x86_64__) || defined(__aarch64__))
    int major, minor; /* the pow that runs is the C library's at run time */
    if (sscanf(gnu_get_libc_version(), "%d.%d", &major, &minor) != 2 ||
        major < 2 || (major == 2 && minor < 28))
        return 0;
    /* a*a = 1 + 2^-29 + 2^-60: a fused fma keeps 2^-60. (mg_adam's FMA build
       uses the instruction, fused by definition; this checks the library's.) */
    volatile double a = 1 + 0x1p-30;
    return fma(a, a, -(a * a)) == 0x1p-60;
#else
    return 0;
#endif
}

/* The library cannot change while the process runs: checked once. */
static int32_t cheap_ok;
static void check_cheap(void) { cheap_ok = cheap_powers(); }

int32_t mg_adam_cheap(void) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, check_cheap);
    return cheap_ok;
}

/* The indices of the k values to settle into todo, in order: those not
   surely right (sure[i] == 0), or all with check. Returns how many. Without
   a branch to mispredict. */
static int pending(int *todo, const int64_t *sure, int k, int check) {
    int n = 0;
    for (int i = 0; i < k; i++) {
        todo[n] = i;
        n += check | !sure[i];
    }
    return n;
}

/* y[i] = pow(x[i], e) for the n values todo lists; counts calls of pow in
   *slow and, with check, the sure values that pow contradicts in *bad. */
static void settle(double *y, const double *x, const int64_t *sure, const int *todo, int n, double e,
                   int64_t *slow, int64_t *bad) {
    for (int j = 0; j < n; j++) {
        int i = todo[j];
        double z = pow(x[i], e);
        *slow += !sure[i];
        *bad += sure[i] && bits(y[i]) != bits(z);
        y[i] = z;
    }
}

/* b = sqrt(h) for k values. sqrt() must keep its errno path (a call for a
   negative argument), which stops a loop of it from vectorizing; sqrtpd is
   the same correctly rounded IEEE square root, 2 (SSE2) or 4 (AVX) at a time. */
static void roots(double *b, const double *h, int k) {
    int i = 0;
#ifdef __SSE2__
    for (; i + 2 <= k; i += 2) _mm_storeu_pd(b + i, _mm_sqrt_pd(_mm_loadu_pd(h + i)));
#endif
    for (; i < k; i++) b[i] = sqrt(h[i]);
}

static int disjoint(const double *a, const double *b, int64_t n) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b, len = (uintptr_t)n * sizeof *a;
    return x + len <= y || y + len <= x;
}

/* A second build of each step for CPUs with AVX2 and FMA (clones.h's
   MG_WIDE): there fma() is one instruction, and square roots and divisions
   run 4 wide. */
#ifdef MG_WIDE_BUILD
MG_WIDE static void roots4(double *b, const double *h, int k) {
    int i = 0;
    for (; i + 4 <= k; i += 4) _mm256_storeu_pd(b + i, _mm256_sqrt_pd(_mm256_loadu_pd(h + i)));
    for (; i < k; i++) b[i] = sqrt(h[i]);
}

/* pending() of a block (sure holds 256 values; those from k on are read
   but masked off): a word of 64 bits, one per value not
   surely right, made by 4-wide compares, then its set bits in order. Few
   values take pow, so this beats pending()'s pass over every index. */
MG_WIDE static int pending4(int *todo, const int64_t *sure, int k, int check) {
    if (check) return pending(todo, sure, k, check);
    int n = 0;
    for (int i0 = 0; i0 < k; i0 += 64) {
        uint64_t w = 0;
        for (int j = 0; j < 64; j += 4) {
            const __m256i s = _mm256_loadu_si256((const __m256i *)(sure + i0 + j));
            const int zero = _mm256_movemask_pd(_mm256_castsi256_pd(_mm256_cmpeq_epi64(s, _mm256_setzero_si256())));
            w |= (uint64_t)zero << j;
        }
        if (k - i0 < 64) w &= ((uint64_t)1 << (k - i0)) - 1;
        for (; w; w &= w - 1) todo[n++] = i0 + __builtin_ctzll(w);
    }
    return n;
}
#else
#define roots4 roots
#define pending4 pending
#endif
#define INLINE static inline __attribute__((always_inline))

/* Exact mode: the reference's operations in its order. The same IEEE
   operations in either build: -ffp-contract=off keeps a*b+c two roundings. */
INLINE int64_t exact_step(double *p, double *g, double *m, double *v, int64_t n, double lr_t, double b1, double b2,
                          double bc1, double bc2, double eps, int64_t *mismatch, int wide) {
    int64_t cheap = mg_adam_cheap(), check = mismatch != NULL;
    int64_t slow = 0, bad = 0, sure[256];
    int todo[256];
    double a[256], b[256], h[256]; /* per block: the powers apart, so the rest vectorizes */
    for (int64_t i0 = 0; i0 < n; i0 += 256) {
        int k = n - i0 < 256 ? (int)(n - i0) : 256;
        double *P = p + i0, *G = g + i0, *M = m + i0, *V = v + i0;
        for (int i = 0; i < k; i++) a[i] = G[i] * G[i];
        for (int i = 0; i < k; i++) sure[i] = cheap & sure_square(G[i], a[i]);
        settle(a, G, sure, todo, (wide ? pending4 : pending)(todo, sure, k, check), 2, &slow, &bad);
        for (int i = 0; i < k; i++) {
            M[i] = b1 * M[i] + (1 - b1) * G[i];
            V[i] = b2 * V[i] + (1 - b2) * a[i];
            a[i] = M[i] / bc1; /* m_hat */
            h[i] = V[i] / bc2; /* v_hat */
            G[i] = 0;
        }
        if (wide) roots4(b, h, k); else roots(b, h, k);
        for (int i = 0; i < k; i++) {
            b[i] = b[i] + 0.0;
            sure[i] = cheap & sure_root(h[i], b[i]);
        }
        settle(b, h, sure, todo, (wide ? pending4 : pending)(todo, sure, k, check), 0.5, &slow, &bad);
        for (int i = 0; i < k; i++) P[i] -= lr_t * a[i] / (b[i] + eps);
    }
    if (mismatch) *mismatch = bad;
    return slow;
}
MG_WIDE static int64_t exact_wide(double *p, double *g, double *m, double *v, int64_t n, double lr_t, double b1,
                               double b2, double bc1, double bc2, double eps, int64_t *mismatch) {
    return exact_step(p, g, m, v, n, lr_t, b1, b2, bc1, bc2, eps, mismatch, 1);
}
static int64_t exact_plain(double *p, double *g, double *m, double *v, int64_t n, double lr_t, double b1,
                           double b2, double bc1, double bc2, double eps, int64_t *mismatch) {
    return exact_step(p, g, m, v, n, lr_t, b1, b2, bc1, bc2, eps, mismatch, 0);
}

/* Fast mode: p -= (lr_t / bc1) m / (sqrt(v (1 / bc2)) + eps), the bias
   corrections folded into multipliers made once per step, in one pass; the
   wide build also fuses with FMA. Not the reference's bits: about 1 ULP of the
   step's update apart (the tests compare it with numpy's Adam). */
static void fast_plain(double *restrict p, double *restrict g, double *restrict m, double *restrict v, int64_t n,
                       double b1, double b2, double s, double r2, double eps) {
    for (int64_t i = 0; i < n; i++) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * (g[i] * g[i]);
        p[i] -= s * m[i] / (sqrt(v[i] * r2) + eps);
        g[i] = 0;
    }
}
#ifdef MG_WIDE_BUILD
MG_WIDE static void fast_wide(double *restrict p, double *restrict g, double *restrict m, double *restrict v,
                           int64_t n, double b1, double b2, double s, double r2, double eps) {
    const __m256d B1 = _mm256_set1_pd(b1), C1 = _mm256_set1_pd(1 - b1), B2 = _mm256_set1_pd(b2);
    const __m256d C2 = _mm256_set1_pd(1 - b2), S = _mm256_set1_pd(s), R2 = _mm256_set1_pd(r2);
    const __m256d E = _mm256_set1_pd(eps), Z = _mm256_setzero_pd();
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m256d G = _mm256_loadu_pd(g + i);
        const __m256d M = _mm256_fmadd_pd(B1, _mm256_loadu_pd(m + i), _mm256_mul_pd(C1, G));
        const __m256d V = _mm256_fmadd_pd(B2, _mm256_loadu_pd(v + i), _mm256_mul_pd(C2, _mm256_mul_pd(G, G)));
        const __m256d D = _mm256_add_pd(_mm256_sqrt_pd(_mm256_mul_pd(V, R2)), E);
        _mm256_storeu_pd(p + i, _mm256_fnmadd_pd(S, _mm256_div_pd(M, D), _mm256_loadu_pd(p + i)));
        _mm256_storeu_pd(m + i, M);
        _mm256_storeu_pd(v + i, V);
        _mm256_storeu_pd(g + i, Z);
    }
    fast_plain(p + i, g + i, m + i, v + i, n - i, b1, b2, s, r2, eps);
}
#else
#define fast_wide fast_plain
#endif

int64_t mg_adam(double *p, double *g, double *m, double *v, int64_t n, double lr_t,
                double b1, double b2, double bc1, double bc2, double eps, int32_t exact, int64_t *mismatch) {
    if (!p || !g || !m || !v || n < 0 || n > INT64_MAX / 16 || bc1 == 0 || bc2 == 0 || !(eps > 0))
        return MG_EARG;
    if (!disjoint(p, g, n) || !disjoint(p, m, n) || !disjoint(p, v, n) ||
        !disjoint(g, m, n) || !disjoint(g, v, n) || !disjoint(m, v, n))
        return MG_EARG;
    const int wide = MG_HAVE_WIDE();
    if (exact)
        return (wide ? exact_wide : exact_plain)(p, g, m, v, n, lr_t, b1, b2, bc1, bc2, eps, mismatch);
    if (mismatch) *mismatch = 0;
    (wide ? fast_wide : fast_plain)(p, g, m, v, n, b1, b2, lr_t / bc1, 1 / bc2, eps);
    return 0;
}
