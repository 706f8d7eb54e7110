/* products.h: fast mode backward's matrix products (products.c), for doc_fast.c */
#include <stdint.h>

/* c (m x nc) += A b, row-major, b K x nc; A's element (r, k) is
   a[r * ars + k * aks] (ars K, aks 1: a itself; ars 1, aks m: a's transpose,
   read in place); bp: scratch for 8 K doubles */
void doc_product(double *c, const double *a, int64_t ars, int64_t aks, const double *b, double *bp, int32_t m,
                 int32_t K, int32_t nc);
