/* doc_exact.c: exact mode's whole-document backward. It reads the saved
   activations of doc_fast.c's forward (whose values are the reference's, bit
   for bit) and makes the reference's additions, every one, in the
   reference's order, without a node: each gradient below is the double the
   reference's Value would hold. docs/exact.md has the argument; here, beside
   each op, what it implies.

   The reference's backward walks its nodes in the reverse of a depth-first
   post-order from the loss, and a node used several times adds its
   contributions in that order. For a document that order is a property of the
   model's shape, the same for every document (docs/exact.md derives it):
   - loss = (l_0 + ... + l_{n-1}) * (1/n), so the walk takes position n-1's
     nodes first, then n-2's, ...: a weight, used once per position, adds its
     contributions from the last position to the first; so do the cached keys
     and values, which later positions use once each.
   - Inside a position, the first use of a vector's first element visits
     everything it depends on, and each later use finds it visited. Each op's
     inputs thus receive their contributions in a fixed order, written at each
     op below ("rows from the last"): a linear's input from its rows, the
     last row first; an rmsnorm's input from the residual add first, then its
     output, then its square (twice).
   Gradients start at +0.0 and each contribution is local_grad * grad, added
   as one correctly rounded double; "0.0 +" below is the reference's first
   addition, which turns a -0.0 contribution into +0.0. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "microgpt.h"
#include "doc_fast.h"
#include "doc.h"

/* ------------------------------------------------------------------------ */
/* linear: y_o = sum_i W[o][i] x_i. Each product's gradient is its row's G_o;
   it adds x_i G_o to W[o][i] and W[o][i] G_o to x_i. */

/* dW += the n positions' contributions, the last position first:
   dW[o][i] += G[p][o] x[p][i] for p = n-1 .. 0 (gemm with k, the position,
   descending). gt: n nout doubles. */
static void weight_back(double *dw, const double *G, const double *x, int32_t n, int32_t nin, int32_t nout,
                        double *gt, double *bp) {
    for (int32_t p = 0; p < n; p++)
        for (int32_t o = 0; o < nout; o++) gt[(int64_t)o * n + p] = G[(int64_t)p * nout + o];
    gemm(dw, gt, x, bp, nout, n, nin, 0, 1);
}

/* dx (zero on entry) = 0.0 + W[nout-1][i] G[p][nout-1] + ... + W[0][i] G[p][0]:
   a linear whose rows the walk visits first to last receives their
   contributions last row first (gemm with k, the row, descending). */
static void input_back(double *dx, const double *G, const double *w, int32_t n, int32_t nin, int32_t nout,
                       double *bp) {
    gemm(dx, G, w, bp, n, nout, nin, 0, 1);
}

/* ------------------------------------------------------------------------ */
/* rmsnorm: ss = x_0 x_0 + ...; a = ss * pow(len, -1) + 1e-5; r = pow(a, -0.5);
   y_i = x_i r. The walk finishes r's chain (the squares) before any y_i,
   and visits the y_i first to last, so r receives from y_{len-1} first; then
   the chain passes r's gradient down unchanged but for its two products.
   gx holds x's earlier contributions (the residual add's, where there is
   one); then come y_i's (r g_i) and the square's two (x_i g_sq each). */
CLONES static void rmsnorm_back(double *gx, const double *gy, const double *x, const double *r, int32_t n, int32_t len) {
    const double inv = pow(len, -1.0);
    for (int32_t p = 0; p < n; p++) {
        const double *xp = x + (int64_t)p * len, *gp = gy + (int64_t)p * len;
        double *gxp = gx + (int64_t)p * len, ss = 0.0, gr = 0.0;
        for (int32_t i = 0; i < len; i++) ss += xp[i] * xp[i];
        for (int32_t i = len - 1; i >= 0; i--) gr += xp[i] * gp[i];
        const double ga = 0.0 + -0.5 * pow(ss * inv + 1e-5, -1.5) * gr; /* pow's local gradient: p pow(a, p-1) */
        const double gsq = 0.0 + inv * ga;                                /* through ms = ss * inv and a = ms + 1e-5 */
        for (int32_t i = 0; i < len; i++) {
            gxp[i] += r[p] * gp[i];
            gxp[i] += xp[i] * gsq;
            gxp[i] += xp[i] * gsq;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* attention, per position p and head h (T = p + 1 keys):
   dot_t = sum_j q_j k_t[j]; logit_t = dot_t * c; e_t = exp(logit_t + -max);
   total = e_0 + ...; w_t = e_t * pow(total, -1) (one pow node per t);
   out_j = sum_t w_t v_t[j].
   The walk enters from out_{first j}, whose first term's w_0 visits e_0
   (dot_0), then total's chain (dot_1, ...); each later out_j finds them
   visited. So w_t receives from out_j, the last j first; total from its pow
   nodes, the last t first; e_t from w_t, then from total's chain; q_j from
   the dots, the last t first. Every key and value receives one contribution
   per position, the positions last first (p runs down). dk, dv: zero on
   entry; gw: scratch for n doubles. */
CLONES static void attention_back(double *dq, double *dk, double *dv, double *gw, const double *gout, const layer_acts *a,
                           int32_t n, int32_t D, int32_t H) {
    const int32_t hd = D / H;
    const double c = pow(pow(hd, 0.5), -1.0);
    for (int32_t p = n - 1; p >= 0; p--)
        for (int32_t h = 0; h < H; h++) {
            const int64_t at = ((int64_t)h * n + p) * n, hs = h * hd;
            const double *w = a->att + at, *e = a->ex + at, *g = gout + (int64_t)p * D + hs;
            const double *qp = a->q + (int64_t)p * D + hs;
            double total = 0.0; /* the forward's sum again, and its pow(total, -1) */
            for (int32_t t = 0; t <= p; t++) total += e[t];
            const double inv = a->inv[(int64_t)h * n + p], dinv = -1.0 * pow(total, -2.0);
            for (int32_t t = 0; t <= p; t++) {
                const double *vt = a->v + (int64_t)t * D + hs;
                double *dvt = dv + (int64_t)t * D + hs, s = 0.0;
                for (int32_t j = hd - 1; j >= 0; j--) {
                    s += vt[j] * g[j];
                    dvt[j] += w[t] * g[j];
                }
                gw[t] = s;
            }
            double gtotal = 0.0;
            for (int32_t t = p; t >= 0; t--) gtotal += dinv * (0.0 + e[t] * gw[t]);
            for (int32_t t = 0; t <= p; t++) {
                const double gsub = 0.0 + e[t] * ((0.0 + inv * gw[t]) + gtotal);
                gw[t] = 0.0 + c * gsub; /* now the dot's gradient */
            }
            double *dqp = dq + (int64_t)p * D + hs;
            for (int32_t j = 0; j < hd; j++) dqp[j] = 0.0;
            for (int32_t t = p; t >= 0; t--) {
                const double *kt = a->k + (int64_t)t * D + hs;
                double *dkt = dk + (int64_t)t * D + hs;
                for (int32_t j = 0; j < hd; j++) {
                    dqp[j] += kt[j] * gw[t];
                    dkt[j] += qp[j] * gw[t];
                }
            }
        }
}

/* q, k, v = linear(xn, Wq / Wk / Wv): the rows in the order the walk visits
   them, per head: Wq's, Wk's (at position 0 alternating with Wq's: q_j, then
   k_0[j], in dot_0), then Wv's (one per out_j). xn receives from them in
   reverse. Row k of the order, for position 0 or any other, into t2's row k
   (the weights) and column k of t1 (the gradients, n rows of 3D). */
static void qkv_order(double *t1, double *t2, const double *const G[3], const double *const W[3], int32_t n,
                      int32_t D, int32_t H, int first) {
    const int32_t hd = D / H;
    int32_t k = 0;
    for (int32_t h = H - 1; h >= 0; h--)
        for (int32_t s = 0; s < 3 * hd; s++) { /* Wv's rows last first, then Wk's and Wq's */
            int32_t m, j;
            if (s < hd) m = 2, j = hd - 1 - s;
            else if (first) m = (s - hd) % 2 ? 0 : 1, j = hd - 1 - (s - hd) / 2;
            else m = s < 2 * hd ? 1 : 0, j = hd - 1 - (s - hd) % hd;
            const int32_t row = h * hd + j;
            memcpy(t2 + (int64_t)k * D, W[m] + (int64_t)row * D, (size_t)D * sizeof(double));
            for (int32_t p = 0; p < n; p++) t1[(int64_t)p * 3 * D + k] = G[m][(int64_t)p * D + row];
            k++;
        }
}

/* ------------------------------------------------------------------------ */
/* nll: l = log(e_t * pow(total, -1)) * -1 at the target t; only the target's
   pow node is reached. The walk visits e_t through p_t, then total's chain:
   e_t receives from p_t first. Each loss's gradient is (1/n) dloss, through
   the mean's mul and its chain of adds. G: the logits' gradients. */
static void nll_back(double *G, const double *ex, const double *invs, const int32_t *target, int32_t n, int32_t V,
                     double dloss) {
    const double gl = 0.0 + 1.0 / n * dloss;
    for (int32_t p = 0; p < n; p++) {
        const double *e = ex + (int64_t)p * V;
        const int32_t t = target[p];
        double total = 0.0;
        for (int32_t i = 0; i < V; i++) total += e[i];
        const double inv = invs[p], dinv = -1.0 * pow(total, -2.0), prob = e[t] * inv;
        const double gprob = 0.0 + 1 / prob * (0.0 + -1.0 * gl); /* log's local gradient is 1 / p */
        const double gtotal = 0.0 + dinv * (0.0 + e[t] * gprob);
        for (int32_t i = 0; i < V; i++) {
            const double ge = i == t ? (0.0 + inv * gprob) + gtotal : 0.0 + gtotal;
            G[(int64_t)p * V + i] = 0.0 + e[i] * ge; /* through exp (its value) and the add of -max */
        }
    }
}

/* ------------------------------------------------------------------------ */
/* the model */

/* the backward's scratch, in doubles */
static int64_t scratch(const mg_doc *d) {
    const int64_t n = d->n, D = d->d, F = 4 * D, nD = n * D;
    int64_t wide = d->V > F ? d->V : F; /* the widest linear's nout (q, k, v together: 3D) */
    if (3 * D > wide) wide = 3 * D;
    const int64_t rows = wide > n ? wide : n;
    return n * d->V + 7 * nD + 2 * n * F + n + n * wide + 3 * D * D + 8 * rows;
}

/* (static, and a name no other file uses: clang makes the clones' resolver
   only for a static function its file calls, and names it after the function) */
CLONES static void exact_backward(mg_doc *d, const double *params, double *grads, double dloss, double *b) {
    const int32_t n = d->n, D = d->d, F = 4 * D, V = d->V;
    const int64_t nD = (int64_t)n * D;
    double *G = b, *gx = G + (int64_t)n * V, *gmid = gx + nD, *dxn = gmid + nD, *datt = dxn + nD;
    double *dq = datt + nD, *dk = dq + nD, *dv = dk + nD, *dh = dv + nD;
    double *dhr = dh + (int64_t)n * F, *gw = dhr + (int64_t)n * F, *t1 = gw + n;
    int64_t wide = V > F ? V : F;
    if (3 * D > wide) wide = 3 * D;
    double *t2 = t1 + n * wide, *bp = t2 + 3 * D * D;

    nll_back(G, d->ex, d->inv, d->tok + 1, n, V, dloss);
    /* lm_head: its rows are visited from the target's, then 0, 1, ... without
       it: x receives the target row's contribution last */
    weight_back(GRAD(LM_HEAD), G, d->xl, n, D, V, t1, bp);
    double *gt = dh; /* each position's target gradient, set aside */
    for (int32_t p = 0; p < n; p++) gt[p] = G[(int64_t)p * V + d->tok[p + 1]], G[(int64_t)p * V + d->tok[p + 1]] = 0.0;
    memset(gx, 0, nD * sizeof(double)); /* adding the zeroed term's +-0 changes no sum: none is -0 */
    input_back(gx, G, PARAM(LM_HEAD), n, D, V, bp);
    for (int32_t p = 0; p < n; p++)
        for (int32_t i = 0; i < D; i++) gx[(int64_t)p * D + i] += PARAM(LM_HEAD)[(int64_t)d->tok[p + 1] * D + i] * gt[p];

    for (int32_t l = d->L - 1; l >= 0; l--) { /* gx: the gradient of the layer's output, then of its input */
        const layer_acts *a = &d->layers[l];
        const int64_t *o = d->offs + LAYER0 + NLAYERW * l;
        /* out = f + xmid: f and xmid each receive gx, xmid before its rmsnorm's */
        weight_back(grads + o[FC2], gx, a->h, n, F, D, t1, bp);
        memset(dhr, 0, (size_t)n * F * sizeof(double));
        input_back(dhr, gx, params + o[FC2], n, F, D, bp);
        for (int64_t i = 0; i < (int64_t)n * F; i++) dh[i] = a->h[i] > 0.0 ? dhr[i] : 0.0; /* 0.0 + relu' g */
        weight_back(grads + o[FC1], dh, a->xn2, n, D, F, t1, bp);
        memset(dxn, 0, nD * sizeof(double));
        input_back(dxn, dh, params + o[FC1], n, D, F, bp);
        memcpy(gmid, gx, nD * sizeof(double));
        rmsnorm_back(gmid, dxn, a->xmid, a->r2, n, D);
        /* xmid = o + x: o and x each receive gmid, x before its rmsnorm's */
        weight_back(grads + o[WO], gmid, a->a, n, D, D, t1, bp);
        memset(datt, 0, nD * sizeof(double));
        input_back(datt, gmid, params + o[WO], n, D, D, bp);
        memset(dk, 0, 2 * nD * sizeof(double));
        attention_back(dq, dk, dv, gw, datt, a, n, D, d->H);
        const double *Gs[3] = {dq, dk, dv}, *Ws[3] = {params + o[WQ], params + o[WK], params + o[WV]};
        for (int32_t m = 0; m < 3; m++) weight_back(grads + o[WQ + m], Gs[m], a->xn, n, D, D, t1, bp);
        memset(dxn, 0, nD * sizeof(double));
        qkv_order(t1, t2, Gs, Ws, 1, D, d->H, 1); /* position 0 */
        gemm(dxn, t1, t2, bp, 1, 3 * D, D, 0, 0);
        if (n > 1) {
            qkv_order(t1, t2, Gs, Ws, n, D, d->H, 0);
            gemm(dxn + D, t1 + 3 * D, t2, bp, n - 1, 3 * D, D, 0, 0);
        }
        memcpy(gx, gmid, nD * sizeof(double));
        rmsnorm_back(gx, dxn, a->xin, a->r1, n, D);
    }
    /* the embedding's rmsnorm, then e = wte[token] + wpe[p] */
    memset(dxn, 0, nD * sizeof(double));
    rmsnorm_back(dxn, gx, d->x0, d->r0, n, D);
    for (int32_t p = n - 1; p >= 0; p--)
        for (int32_t i = 0; i < D; i++) {
            GRAD(WTE)[(int64_t)d->tok[p] * D + i] += dxn[(int64_t)p * D + i];
            GRAD(WPE)[(int64_t)p * D + i] += dxn[(int64_t)p * D + i];
        }
}

int32_t mg_doc_backward_exact(mg_doc *d, const double *params, double *grads, int64_t nparams, double dloss) {
    int32_t r = doc_check(d, params, grads, nparams);
    if (r) return r;
    const int64_t need = scratch(d);
    if (need > d->xcap) {
        double *b = realloc(d->xbuf, (size_t)need * sizeof(double));
        if (!b) return doc_fail(d, MG_ENOMEM, "cannot allocate %lld doubles for a backward", (long long)need);
        d->xbuf = b, d->xcap = need;
    }
    d->ready = 0;
    exact_backward(d, params, grads, dloss, d->xbuf);
    return 0;
}
