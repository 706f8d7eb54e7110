/* doc_back.c: kernels of fast mode's backward (doc_fast.c): the linear
   layers' matrix products and attention's backward. Any order will do there
   (fast mode's backward is not the reference's bits). In the products, on a
   CPU with FMA each multiply-add is one fused
   instruction: a build of its own for AVX2 and FMA, picked per call; the
   plain C one is what the sanitizer runs build alone (MG_NO_CLONES). The
   kernel is doc_fast.c's gemm (block, columns) with A read strided, so that
   dW += dy^T x needs no transpose. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "doc_back.h"

typedef double v4 __attribute__((vector_size(32)));
#define LOAD4(v, p) memcpy(&(v), (p), sizeof(v4)) /* unaligned; macros: no v4 crosses a call */
#define STORE4(p, v) memcpy((p), &(v), sizeof(v4))
#define INLINE static inline __attribute__((always_inline))

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(MG_NO_CLONES)
#include <immintrin.h>
#define WIDE_BUILD 1
#define WIDE __attribute__((target("avx2,fma")))
WIDE INLINE void madd_fused(v4 *c, const v4 *a, const v4 *b) {
    *c = (v4)_mm256_fmadd_pd((__m256d)*a, (__m256d)*b, (__m256d)*c);
}
#endif
INLINE void madd_plain(v4 *c, const v4 *a, const v4 *b) { *c += *a * *b; }
typedef void madd_fn(v4 *c, const v4 *a, const v4 *b); /* pointers: no v4 crosses a call */

/* A's element (r, k): A itself (ars K, aks 1) or a's transpose (ars 1, aks
   m), read in place */
#define A(r, k) a[(int64_t)(r) * ars + (int64_t)(k) * aks]

/* R rows x W columns of c from row p and column o, as doc_fast.c's block()
   but A strided, b's rows ldb apart and each multiply-add madd's (R, W,
   madd constant where it is inlined) */
INLINE void block(double *restrict c, const double *restrict a, int64_t ars, int64_t aks, const double *restrict bp,
                  int64_t ldb, int32_t K, int32_t nc, int32_t p, int32_t o, int R, int W, madd_fn *madd) {
    v4 acc[4][2], bk[2];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < W / 4; h++) LOAD4(acc[r][h], c + (int64_t)(p + r) * nc + o + 4 * h);
    for (int32_t k = 0; k < K; k++) {
        for (int h = 0; h < W / 4; h++) LOAD4(bk[h], bp + k * ldb + 4 * h);
        for (int r = 0; r < R; r++) {
            const double ar = A(p + r, k);
            const v4 av = {ar, ar, ar, ar};
            for (int h = 0; h < W / 4; h++) madd(&acc[r][h], &av, &bk[h]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int h = 0; h < W / 4; h++) STORE4(c + (int64_t)(p + r) * nc + o + 4 * h, acc[r][h]);
}

/* W columns of c from column o, every row. b's columns are packed into bp
   first when b is large (its rows far apart: every k in the same L1 set, as
   in doc_fast.c's gemm); a small b is read in place, where packing would cost
   as much as the product. The last m % 4 rows in one block. */
INLINE void columns(double *restrict c, const double *restrict a, int64_t ars, int64_t aks, const double *restrict b,
                    double *restrict bp, int32_t m, int32_t K, int32_t nc, int32_t o, int W, madd_fn *madd) {
    const double *panel = b + o;
    int64_t ldb = nc;
    if ((int64_t)K * nc > 2048) {
        for (int32_t k = 0; k < K; k++)
            for (int j = 0; j < W; j++) bp[(int64_t)k * W + j] = b[(int64_t)k * nc + o + j];
        panel = bp, ldb = W;
    }
    int32_t p = 0;
    for (; p + 4 <= m; p += 4) block(c, a, ars, aks, panel, ldb, K, nc, p, o, 4, W, madd);
    switch (m - p) {
    case 3: block(c, a, ars, aks, panel, ldb, K, nc, p, o, 3, W, madd); break;
    case 2: block(c, a, ars, aks, panel, ldb, K, nc, p, o, 2, W, madd); break;
    case 1: block(c, a, ars, aks, panel, ldb, K, nc, p, o, 1, W, madd); break;
    }
}

/* c (m x nc) += A b, b K x nc row-major; bp: scratch for 8 K doubles */
INLINE void product(double *restrict c, const double *restrict a, int64_t ars, int64_t aks, const double *restrict b,
                    double *restrict bp, int32_t m, int32_t K, int32_t nc, madd_fn *madd) {
    int32_t o = 0;
    for (; o + 8 <= nc; o += 8) columns(c, a, ars, aks, b, bp, m, K, nc, o, 8, madd);
    for (; o + 4 <= nc; o += 4) columns(c, a, ars, aks, b, bp, m, K, nc, o, 4, madd);
    for (; o < nc; o++)
        for (int32_t p = 0; p < m; p++) {
            double acc = c[(int64_t)p * nc + o];
            for (int32_t k = 0; k < K; k++) acc += A(p, k) * b[(int64_t)k * nc + o];
            c[(int64_t)p * nc + o] = acc;
        }
}
#undef A

static void product_plain(double *c, const double *a, int64_t ars, int64_t aks, const double *b, double *bp,
                          int32_t m, int32_t K, int32_t nc) {
    product(c, a, ars, aks, b, bp, m, K, nc, madd_plain);
}
#ifdef WIDE_BUILD
WIDE static void product_fused(double *c, const double *a, int64_t ars, int64_t aks, const double *b, double *bp,
                               int32_t m, int32_t K, int32_t nc) {
    product(c, a, ars, aks, b, bp, m, K, nc, madd_fused);
}
#endif

void doc_product(double *c, const double *a, int64_t ars, int64_t aks, const double *b, double *bp, int32_t m,
                 int32_t K, int32_t nc) {
#ifdef WIDE_BUILD
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        product_fused(c, a, ars, aks, b, bp, m, K, nc);
        return;
    }
#endif
    product_plain(c, a, ars, aks, b, bp, m, K, nc);
}

/* ------------------------------------------------------------------------ */
/* attention's backward, per head: its loops over a head's hd values 4 to a
   register, in the AVX2 build too (target_clones, as doc_fast.c's kernels) */

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(MG_NO_CLONES)
#define CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CLONES
#endif

/* y += a g over hd values, returning g . x (in 4 partial sums) */
INLINE double dot_axpy(double *restrict y, double a, const double *restrict g, const double *restrict x, int32_t hd) {
    const v4 av = {a, a, a, a};
    v4 acc = {0, 0, 0, 0}, gj, xj, yj;
    int32_t j = 0;
    for (; j + 4 <= hd; j += 4) {
        LOAD4(gj, g + j), LOAD4(xj, x + j), LOAD4(yj, y + j);
        acc += gj * xj, yj += av * gj;
        STORE4(y + j, yj);
    }
    double dot = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for (; j < hd; j++) dot += g[j] * x[j], y[j] += a * g[j];
    return dot;
}

/* y1 += a x1 and y2 += a x2 over hd values */
INLINE void axpy2(double *restrict y1, double *restrict y2, double a, const double *restrict x1,
                  const double *restrict x2, int32_t hd) {
    const v4 av = {a, a, a, a};
    v4 x, y;
    int32_t j = 0;
    for (; j + 4 <= hd; j += 4) {
        LOAD4(x, x1 + j), LOAD4(y, y1 + j), y += av * x, STORE4(y1 + j, y);
        LOAD4(x, x2 + j), LOAD4(y, y2 + j), y += av * x, STORE4(y2 + j, y);
    }
    for (; j < hd; j++) y1[j] += a * x1[j], y2[j] += a * x2[j];
}

CLONES void doc_attention_backward(double *dq, double *dk, double *dv, double *dw, const double *dout,
                                   const double *att, const double *q, const double *k, const double *v, int32_t n,
                                   int32_t d, int32_t H) {
    const int32_t hd = d / H;
    const double c = pow(pow(hd, 0.5), -1.0);
    for (int32_t h = 0; h < H; h++)
        for (int32_t p = 0; p < n; p++) {
            const int64_t at = (int64_t)p * d + h * hd;
            const double *g = dout + at, *w = att + ((int64_t)h * n + p) * n;
            double s = 0.0;
            for (int32_t t = 0; t <= p; t++) {
                const int64_t tt = (int64_t)t * d + h * hd;
                dw[t] = dot_axpy(dv + tt, w[t], g, v + tt, hd);
                s += w[t] * dw[t];
            }
            for (int32_t t = 0; t <= p; t++) {
                const int64_t tt = (int64_t)t * d + h * hd;
                axpy2(dq + at, dk + tt, w[t] * (dw[t] - s) * c, k + tt, q + at, hd);
            }
        }
}
