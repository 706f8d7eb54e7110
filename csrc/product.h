/* product.h: the one matrix-product kernel, inlined where it is built
   (doc_fast.c's gemm: plain multiply-adds, the reference's bits; doc_back.c:
   fused ones too, for fast mode's backward).

   c (m x nc) += A B, each output's terms added in ascending k (descending
   with krev): a vector of 4 outputs in a register gets the same bits as one
   output at a time, as nothing is reassociated. A's element (r, k) is
   a[r * ars + k * aks] (ars K, aks 1: a itself; ars 1, aks m: a's
   transpose, read in place). B is b (K x nc), or with bt b's transpose
   (b nc x K). bp: scratch for 8 K doubles. */
#ifndef MG_PRODUCT_H
#define MG_PRODUCT_H
#include <stdint.h>
#include <string.h>

typedef double v4 __attribute__((vector_size(32)));
#define LOAD4(v, p) memcpy(&(v), (p), sizeof(v4)) /* unaligned; macros: no v4 crosses a call */
#define STORE4(p, v) memcpy((p), &(v), sizeof(v4))
#define INLINE static inline __attribute__((always_inline))
typedef void madd_fn(v4 *c, const v4 *a, const v4 *b); /* c += a b; pointers: no v4 crosses a call */
INLINE void madd_plain(v4 *c, const v4 *a, const v4 *b) { *c += *a * *b; }

#define A(r, k) a[(int64_t)(r) * ars + (int64_t)(krev ? K - 1 - (k) : (k)) * aks] /* the k-th term's */
#define B(k, o) (bt ? b[(int64_t)(o) * K + (k)] : b[(int64_t)(k) * nc + (o)])

/* R rows x W columns (W = 4 or 8) of c from row p and column o; the k-th
   term's row of B at rows + k ldb. The accumulators stay in registers over
   the whole k loop; R, W, krev and madd are constants where it is inlined. */
INLINE void block(double *restrict c, const double *restrict a, int64_t ars, int64_t aks,
                  const double *restrict rows, int64_t ldb, int32_t K, int32_t nc, int32_t p, int32_t o, int R, int W,
                  int krev, madd_fn *madd) {
    v4 acc[4][2], bk[2];
    for (int r = 0; r < R; r++)
        for (int h = 0; h < W / 4; h++) LOAD4(acc[r][h], c + (int64_t)(p + r) * nc + o + 4 * h);
    for (int32_t k = 0; k < K; k++) {
        for (int h = 0; h < W / 4; h++) LOAD4(bk[h], rows + k * ldb + 4 * h);
        for (int r = 0; r < R; r++) {
            const double ar = A(p + r, k);
            const v4 av = {ar, ar, ar, ar};
            for (int h = 0; h < W / 4; h++) { /* plain written out: the accumulators stay in registers */
                if (madd == madd_plain) acc[r][h] += av * bk[h];
                else madd(&acc[r][h], &av, &bk[h]);
            }
        }
    }
    for (int r = 0; r < R; r++)
        for (int h = 0; h < W / 4; h++) STORE4(c + (int64_t)(p + r) * nc + o + 4 * h, acc[r][h]);
}

/* W columns of c from column o, every row. A small, untransposed b is read
   in place, where packing would cost as much as the product; else B's
   columns are packed into bp first, in the order k is taken (b's own rows
   far apart would put every k in one L1 set), transposing a bt b. */
INLINE void columns(double *restrict c, const double *restrict a, int64_t ars, int64_t aks,
                    const double *restrict b, int bt, double *restrict bp, int32_t m, int32_t K, int32_t nc, int32_t o,
                    int W, int krev, madd_fn *madd) {
    const double *rows = bp;
    int64_t ldb = W;
    if (!bt && (int64_t)K * nc <= 2048)
        rows = b + (krev ? (int64_t)(K - 1) * nc : 0) + o, ldb = krev ? -(int64_t)nc : nc;
    else
        for (int32_t k = 0; k < K; k++)
            for (int j = 0; j < W; j++) bp[(int64_t)k * W + j] = B(krev ? K - 1 - k : k, o + j);
    int32_t p = 0;
    for (; p + 4 <= m; p += 4) block(c, a, ars, aks, rows, ldb, K, nc, p, o, 4, W, krev, madd);
    switch (m - p) { /* the last m % 4 rows in one block */
    case 3: block(c, a, ars, aks, rows, ldb, K, nc, p, o, 3, W, krev, madd); break;
    case 2: block(c, a, ars, aks, rows, ldb, K, nc, p, o, 2, W, krev, madd); break;
    case 1: block(c, a, ars, aks, rows, ldb, K, nc, p, o, 1, W, krev, madd); break;
    }
}

INLINE void product(double *restrict c, const double *restrict a, int64_t ars, int64_t aks,
                    const double *restrict b, int bt, double *restrict bp, int32_t m, int32_t K, int32_t nc, int krev,
                    madd_fn *madd) {
    int32_t o = 0;
    for (; o + 8 <= nc; o += 8) columns(c, a, ars, aks, b, bt, bp, m, K, nc, o, 8, krev, madd);
    for (; o + 4 <= nc; o += 4) columns(c, a, ars, aks, b, bt, bp, m, K, nc, o, 4, krev, madd);
    for (; o < nc; o++)
        for (int32_t p = 0; p < m; p++) {
            double acc = c[(int64_t)p * nc + o];
            for (int32_t k = 0; k < K; k++) acc += A(p, k) * B(krev ? K - 1 - k : k, o);
            c[(int64_t)p * nc + o] = acc;
        }
}
#undef A
#undef B
#endif
