/* doc_back.c: kernels of fast mode's backward (doc_fast.c): the linear
   layers' matrix products and attention's backward. Any order will do there
   (fast mode's backward is not the reference's bits). In the products, on a
   CPU with FMA each multiply-add is one fused
   instruction: a build of its own for AVX2 and FMA, picked per call; the
   plain C one is what the sanitizer runs build alone (MG_NO_CLONES). The
   kernel is product.h's, with A read strided, so that dW += dy^T x needs no
   transpose. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "clones.h"
#include "doc_back.h"
#include "product.h"

#ifdef MG_WIDE_BUILD
MG_WIDE INLINE void madd_fused(v4 *c, const v4 *a, const v4 *b) {
    *c = (v4)_mm256_fmadd_pd((__m256d)*a, (__m256d)*b, (__m256d)*c);
}
#endif

static void product_plain(double *c, const double *a, int64_t ars, int64_t aks, const double *b, double *bp,
                          int32_t m, int32_t K, int32_t nc) {
    product(c, a, ars, aks, b, 0, bp, m, K, nc, 0, madd_plain);
}
#ifdef MG_WIDE_BUILD
MG_WIDE static void product_fused(double *c, const double *a, int64_t ars, int64_t aks, const double *b, double *bp,
                               int32_t m, int32_t K, int32_t nc) {
    product(c, a, ars, aks, b, 0, bp, m, K, nc, 0, madd_fused);
}
#endif

void doc_product(double *c, const double *a, int64_t ars, int64_t aks, const double *b, double *bp, int32_t m,
                 int32_t K, int32_t nc) {
#ifdef MG_WIDE_BUILD
    if (MG_HAVE_WIDE()) {
        product_fused(c, a, ars, aks, b, bp, m, K, nc);
        return;
    }
#endif
    product_plain(c, a, ars, aks, b, bp, m, K, nc);
}

/* ------------------------------------------------------------------------ */
/* attention's backward, per head: its loops over a head's hd values 4 to a
   register, in the AVX2 build too (clones.h, as doc_fast.c's kernels) */

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

MG_CLONES("avx2", "default")
static void attention_clone(double *dq, double *dk, double *dv, double *dw, const double *dout, const double *att,
                            const double *q, const double *k, const double *v, int32_t n, int32_t d, int32_t H) {
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

/* (clang makes a clones' resolver only for a static function its file calls) */
void doc_attention_backward(double *dq, double *dk, double *dv, double *dw, const double *dout, const double *att,
                            const double *q, const double *k, const double *v, int32_t n, int32_t d, int32_t H) {
    attention_clone(dq, dk, dv, dw, dout, att, q, k, v, n, d, H);
}
