/* doc.h: what the whole-document kernels share (not part of the cdef): the
   saved activations of one forward (doc_fast.c), which exact mode's backward
   (doc_exact.c) reads too, and the kernels both use. */
#ifndef MG_DOC_H
#define MG_DOC_H
#include <stdint.h>
#include "clones.h"

/* The kernels also in an AVX2 build, chosen at load time (clones.h; no
   -march in the build). Without fast-math and with FP contraction off the
   compiler never reassociates a sum nor fuses a multiply and an add, so every
   build gives the same bits (the tests run whichever this machine picks, and
   builds without the clones). */
#define CLONES MG_CLONES("avx2", "default")

typedef struct {
    double *xin, *xn, *r1, *q, *k, *v, *att, *ex, *inv, *a, *xmid, *xn2, *r2, *h;
} layer_acts; /* att: attention's weights; ex: their exps, inv: pow(sum of exps, -1) per head and position */

struct mg_doc {
    int32_t V, d, H, L, n, ready; /* ready: a forward whose backward has not run */
    int32_t forwarded;            /* the last forward ran: its logits are there */
    int64_t nparams, *offs;       /* the forward's parameter layout */
    int32_t *tok;                 /* the forward's n + 1 tokens */
    double *buf, *x0, *r0, *xl, *logits, *probs, *ex, *inv, *panel, *grad_buf; /* one allocation; ex, inv: nll's */
    layer_acts *layers;
    int64_t cap;
    double *xbuf; /* exact mode's backward scratch (doc_exact.c) */
    int64_t xcap;
    char err[200];
};

#define PARAM(i) (params + d->offs[i])
#define GRAD(i) (grads + d->offs[i])
enum { WTE, WPE, LM_HEAD, LAYER0 }; /* offs: then per layer these six */
enum { WQ, WK, WV, WO, FC1, FC2, NLAYERW };

int32_t doc_fail(mg_doc *d, int32_t code, const char *fmt, ...);
/* c (m x nc) += a (m x K) b (K x nc, or with bt its transpose nc x K),
   row-major, each output's terms added in ascending k (descending with krev);
   bp: scratch for 8 K doubles */
void gemm(double *restrict c, const double *restrict a, const double *restrict b, double *restrict bp, int32_t m,
          int32_t K, int32_t nc, int bt, int krev);
int32_t doc_check(mg_doc *d, const double *params, double *grads, int64_t nparams);
#endif
