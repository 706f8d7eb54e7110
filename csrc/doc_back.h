/* doc_back.h: the kernels of fast mode's backward (doc_back.c), for doc_fast.c */
#include <stdint.h>

/* c (m x nc) += A b, row-major, b K x nc; A's element (r, k) is
   a[r * ars + k * aks] (ars K, aks 1: a itself; ars 1, aks m: a's transpose,
   read in place); bp: scratch for 8 K doubles */
void doc_product(double *c, const double *a, int64_t ars, int64_t aks, const double *b, double *bp, int32_t m,
                 int32_t K, int32_t nc);

/* causal attention over n positions, H heads of d / H, weights att (h, p, t):
   dv_t += w_t g; dw_t = g . v_t; dlogit_t = w_t (dw_t - sum_s w_s dw_s) c;
   dq += dlogit_t k_t; dk_t += dlogit_t q. dw is scratch for n values. */
void doc_attention_backward(double *dq, double *dk, double *dv, double *dw, const double *dout, const double *att,
                            const double *q, const double *k, const double *v, int32_t n, int32_t d, int32_t H);
