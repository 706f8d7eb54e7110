/* doc_fast.c: fast mode's whole-document kernel, llm.c style: the model as
   a few layers over all positions at once, each layer's forward beside its
   backward (the products' and attention's backward in doc_back.c), then the
   model's forward and backward that chain them.

   Forward values equal the reference's bit for bit (and so the per-op fast
   path's): every sum starts from 0.0 and adds its terms left to right, with
   the same pow, exp and log calls and constants. A linear layer is a matrix
   product (gemm) whose every output adds its terms in ascending order, four
   outputs to a vector register: the compiler never reassociates, so the
   outputs are the reference's dot products. Backward uses the closed forms
   of fast mode (docs/graph.md, section 6), sums in another order and fuses
   multiply-adds where the CPU can: its gradients agree with the per-op fast
   path's to about 1e-15 relative (the tests check 1e-12). */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "microgpt.h"
#include "doc_fast.h"
#include "doc.h"
#include "doc_back.h"
#include "product.h"

enum { MAX_DIM = 1 << 16, MAX_VOCAB = 1 << 24, MAX_LAYER = 1 << 10 };

int32_t doc_fail(mg_doc *d, int32_t code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err, sizeof d->err, fmt, ap);
    va_end(ap);
    return code;
}

/* A non-finite value among rows x[0..n*len) is an MG_EMATH naming the stage. */
static int32_t all_finite(mg_doc *d, const char *what, const double *x, int32_t n, int64_t len) {
    for (int64_t i = 0; i < n * len; i++)
        if (!isfinite(x[i]))
            return doc_fail(d, MG_EMATH, "%s made a non-finite number (position %d: %g)", what, (int32_t)(i / len), x[i]);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* linear: y = x W^T for n rows of x (nin) and W (nout x nin), row-major.
   gemm is product.h's kernel with plain multiply-adds (the forward's, and
   exact mode's backward's); fast mode's backward takes doc_back.c's. */

CLONES static void gemm_clone(double *restrict c, const double *restrict a, const double *restrict b,
                              double *restrict bp, int32_t m, int32_t K, int32_t nc, int bt, int krev) {
    if (krev) product(c, a, K, 1, b, bt, bp, m, K, nc, 1, madd_plain); /* krev a constant where inlined */
    else product(c, a, K, 1, b, bt, bp, m, K, nc, 0, madd_plain);
}

/* (clang makes a clones' resolver only for a static function its file calls) */
void gemm(double *restrict c, const double *restrict a, const double *restrict b, double *restrict bp, int32_t m,
          int32_t K, int32_t nc, int bt, int krev) {
    gemm_clone(c, a, b, bp, m, K, nc, bt, krev);
}

/* y = 0.0 + x_0 W_0 + x_1 W_1 + ...: the reference's dot products, in order */
static void linear_forward(double *y, const double *x, const double *w, double *bp, int32_t n, int32_t nin,
                           int32_t nout) {
    memset(y, 0, (size_t)n * nout * sizeof(double));
    gemm(y, x, w, bp, n, nin, nout, 1, 0);
}

/* dx += dy W (dx may be NULL: not wanted); dW += dy^T x, dy read in place */
static void linear_backward(double *dx, double *dw, const double *dy, const double *x, const double *w, double *bp,
                            int32_t n, int32_t nin, int32_t nout) {
    if (dx) doc_product(dx, dy, nout, 1, w, bp, n, nout, nin);
    doc_product(dw, dy, 1, nout, x, bp, nout, n, nin);
}

/* ------------------------------------------------------------------------ */
/* rmsnorm, per row: y = x * r, r = (sum(x*x) * pow(len, -1) + 1e-5) ** -0.5 */

/* Returns the first position whose sum of squares is not finite (its r would
   be 0, hiding the overflow), or -1. */
static int32_t rmsnorm_forward(double *y, double *r, const double *x, int32_t n, int32_t len) {
    const double inv = pow(len, -1.0);
    for (int32_t p = 0; p < n; p++) {
        const double *xp = x + (int64_t)p * len;
        double ss = 0.0;
        for (int32_t i = 0; i < len; i++) ss += xp[i] * xp[i];
        if (!isfinite(ss)) return p;
        r[p] = pow(ss * inv + 1e-5, -0.5);
        for (int32_t i = 0; i < len; i++) y[(int64_t)p * len + i] = xp[i] * r[p];
    }
    return -1;
}

/* dx_j += dy_j r - x_j r^3 / len * sum_i dy_i x_i */
static void rmsnorm_backward(double *dx, const double *dy, const double *x, const double *r, int32_t n, int32_t len) {
    for (int32_t p = 0; p < n; p++) {
        const double *xp = x + (int64_t)p * len, *gp = dy + (int64_t)p * len;
        double *dxp = dx + (int64_t)p * len, s = 0.0;
        for (int32_t i = 0; i < len; i++) s += gp[i] * xp[i];
        const double k = s * r[p] * r[p] * r[p] / len;
        for (int32_t i = 0; i < len; i++) dxp[i] += gp[i] * r[p] - xp[i] * k;
    }
}

/* ------------------------------------------------------------------------ */
/* causal attention: per position p and head h, softmax over t <= p of
   (q_h[p] . k_h[t]) * c, c = pow(pow(hd, 0.5), -1); out_h[p] = sum_t w_t v_h[t].
   att[(h * n + p) * n + t] keeps the weights. */

CLONES static void attention_forward(double *out, double *att, double *ex, double *invs, const double *q,
                                     const double *k, const double *v, int32_t n, int32_t d, int32_t H) {
    const int32_t hd = d / H;
    const double c = pow(pow(hd, 0.5), -1.0);
    for (int32_t h = 0; h < H; h++)
        for (int32_t p = 0; p < n; p++) {
            const double *qp = q + (int64_t)p * d + h * hd;
            double *w = att + ((int64_t)h * n + p) * n, *e = ex + ((int64_t)h * n + p) * n, m = -INFINITY;
            double total = 0.0;
            for (int32_t t = 0; t <= p; t++) {
                const double *kt = k + (int64_t)t * d + h * hd;
                double dot = 0.0;
                for (int32_t j = 0; j < hd; j++) dot += qp[j] * kt[j];
                w[t] = dot * c;
                if (w[t] > m) m = w[t];
            }
            for (int32_t t = 0; t <= p; t++) total += e[t] = w[t] = exp(w[t] + -m);
            const double inv = invs[(int64_t)h * n + p] = pow(total, -1.0);
            double *op = out + (int64_t)p * d + h * hd;
            for (int32_t j = 0; j < hd; j++) op[j] = 0.0;
            for (int32_t t = 0; t <= p; t++) {
                const double *vt = v + (int64_t)t * d + h * hd;
                w[t] *= inv;
                for (int32_t j = 0; j < hd; j++) op[j] += w[t] * vt[j];
            }
        }
}

/* ------------------------------------------------------------------------ */
/* softmax cross-entropy, mean over positions: probs keep each row's softmax,
   ex its exps before the division */

static double nll_forward(double *probs, double *ex, double *invs, const double *logits, const int32_t *target,
                          int32_t n, int32_t V) {
    double sum = 0.0;
    for (int32_t p = 0; p < n; p++) {
        const double *l = logits + (int64_t)p * V;
        double *pr = probs + (int64_t)p * V, m = l[0], total = 0.0;
        for (int32_t i = 1; i < V; i++)
            if (l[i] > m) m = l[i];
        for (int32_t i = 0; i < V; i++) total += ex[(int64_t)p * V + i] = pr[i] = exp(l[i] + -m);
        const double inv = invs[p] = pow(total, -1.0);
        for (int32_t i = 0; i < V; i++) pr[i] *= inv;
        sum += log(pr[target[p]]) * -1.0;
    }
    return sum * (1.0 / n);
}

/* probs become the logits' gradients: g / n * (p_i - [i == target]) */
static void nll_backward(double *probs, const int32_t *target, int32_t n, int32_t V, double g) {
    const double gn = g * (1.0 / n);
    for (int32_t p = 0; p < n; p++) {
        double *pr = probs + (int64_t)p * V;
        pr[target[p]] -= 1.0;
        for (int32_t i = 0; i < V; i++) pr[i] *= gn;
    }
}

/* ------------------------------------------------------------------------ */
/* the model (model.gpt over all positions): sizes, forward, backward */


/* Carve the buffer: activations (kept for backward), then backward's scratch. */
static int32_t layout(mg_doc *d) {
    const int64_t n = d->n, nd = n * d->d, nf = 4 * nd, att = (int64_t)d->H * n * n;
    const int64_t wide = d->V > 4 * d->d ? d->V : 4 * d->d; /* the widest linear's nout */
    const int64_t panel = 8 * (wide > n ? wide : n);         /* gemm's K is nin, nout or n */
    const int64_t need = nd + 2 * n + nd + 3 * n * d->V + n * wide + panel
                         + d->L * (8 * nd + nf + 2 * n + 2 * att + d->H * n) + 6 * nd + nf + n;
    layer_acts *layers = realloc(d->layers, (size_t)(d->L ? d->L : 1) * sizeof *layers);
    if (!layers) return doc_fail(d, MG_ENOMEM, "cannot allocate a document's layers");
    d->layers = layers;
    if (need > d->cap) {
        double *b = realloc(d->buf, (size_t)need * sizeof(double));
        if (!b) return doc_fail(d, MG_ENOMEM, "cannot allocate %lld doubles for a document", (long long)need);
        d->buf = b, d->cap = need;
    }
    double *b = d->buf;
#define TAKE(ptr, size) (ptr = b, b += (size))
    TAKE(d->x0, nd), TAKE(d->r0, n), TAKE(d->xl, nd), TAKE(d->logits, n * d->V), TAKE(d->probs, n * d->V);
    TAKE(d->ex, n * d->V), TAKE(d->inv, n);
    TAKE(d->panel, panel);
    for (int32_t l = 0; l < d->L; l++) {
        layer_acts *a = &d->layers[l];
        TAKE(a->xin, nd), TAKE(a->xn, nd), TAKE(a->r1, n), TAKE(a->q, nd), TAKE(a->k, nd), TAKE(a->v, nd);
        TAKE(a->att, att), TAKE(a->ex, att), TAKE(a->inv, d->H * n), TAKE(a->a, nd), TAKE(a->xmid, nd);
        TAKE(a->xn2, nd), TAKE(a->r2, n), TAKE(a->h, nf);
    }
    TAKE(d->grad_buf, 6 * nd + nf + n); /* backward's dx, dxn, dq, dk, dv, da, dh, dw */
#undef TAKE
    return 0;
}

#define NORM(y, r, x) \
    if ((bad = rmsnorm_forward(y, r, x, n, D)) >= 0) \
        return doc_fail(d, MG_EMATH, "rmsnorm made a non-finite number (position %d: its sum of squares)", bad)

CLONES static int32_t forward(mg_doc *d, const double *params, double *loss) {
    const int32_t n = d->n, D = d->d, F = 4 * D;
    const int64_t nD = (int64_t)n * D;
    double *x = d->x0;
    for (int32_t p = 0; p < n; p++)
        for (int32_t i = 0; i < D; i++)
            x[(int64_t)p * D + i] = PARAM(WTE)[(int64_t)d->tok[p] * D + i] + PARAM(WPE)[(int64_t)p * D + i];
    int32_t r = all_finite(d, "embed", x, n, D);
    if (r) return r;
    double *xs = d->L ? d->layers[0].xin : d->xl; /* the normed embedding is the first layer's input */
    int32_t bad;
    NORM(xs, d->r0, x);
    for (int32_t l = 0; l < d->L; l++) {
        layer_acts *a = &d->layers[l];
        const int64_t *o = d->offs + LAYER0 + NLAYERW * l;
        double *out = l + 1 < d->L ? d->layers[l + 1].xin : d->xl;
        NORM(a->xn, a->r1, a->xin);
        linear_forward(a->q, a->xn, params + o[WQ], d->panel, n, D, D);
        linear_forward(a->k, a->xn, params + o[WK], d->panel, n, D, D);
        linear_forward(a->v, a->xn, params + o[WV], d->panel, n, D, D);
        attention_forward(a->a, a->att, a->ex, a->inv, a->q, a->k, a->v, n, D, d->H);
        linear_forward(a->xmid, a->a, params + o[WO], d->panel, n, D, D);
        for (int64_t i = 0; i < nD; i++) a->xmid[i] += a->xin[i];
        NORM(a->xn2, a->r2, a->xmid);
        linear_forward(a->h, a->xn2, params + o[FC1], d->panel, n, D, F);
        for (int64_t i = 0; i < nD * 4; i++) a->h[i] = a->h[i] > 0.0 ? a->h[i] : 0.0;
        linear_forward(out, a->h, params + o[FC2], d->panel, n, F, D);
        for (int64_t i = 0; i < nD; i++) out[i] += a->xmid[i];
        if ((r = all_finite(d, "layer", out, n, D))) return r;
    }
    linear_forward(d->logits, d->xl, PARAM(LM_HEAD), d->panel, n, D, d->V);
    if ((r = all_finite(d, "lm_head", d->logits, n, d->V)) || !loss) return r;
    *loss = nll_forward(d->probs, d->ex, d->inv, d->logits, d->tok + 1, n, d->V);
    return isfinite(*loss) ? 0 : doc_fail(d, MG_EMATH, "nll made a non-finite number (position 0: %g)", *loss);
}

CLONES static void backward(mg_doc *d, const double *params, double *grads, double dloss) {
    const int32_t n = d->n, D = d->d, F = 4 * D;
    const int64_t nD = (int64_t)n * D;
    double *dx = d->grad_buf, *dxn = dx + nD, *dq = dxn + nD, *dk = dq + nD, *dv = dk + nD, *da = dv + nD;
    double *dh = da + nD, *dw = dh + 4 * nD;
    nll_backward(d->probs, d->tok + 1, n, d->V, dloss);
    memset(dx, 0, nD * sizeof(double));
    linear_backward(dx, GRAD(LM_HEAD), d->probs, d->xl, PARAM(LM_HEAD), d->panel, n, D, d->V);
    for (int32_t l = d->L - 1; l >= 0; l--) { /* dx: the gradient of the layer's output, then of its input */
        layer_acts *a = &d->layers[l];
        const int64_t *o = d->offs + LAYER0 + NLAYERW * l;
        memset(dh, 0, 4 * nD * sizeof(double));
        linear_backward(dh, grads + o[FC2], dx, a->h, params + o[FC2], d->panel, n, F, D);
        for (int64_t i = 0; i < 4 * nD; i++) dh[i] = a->h[i] > 0.0 ? dh[i] : 0.0; /* relu: off where its output is 0 */
        memset(dxn, 0, nD * sizeof(double));
        linear_backward(dxn, grads + o[FC1], dh, a->xn2, params + o[FC1], d->panel, n, D, F);
        rmsnorm_backward(dx, dxn, a->xmid, a->r2, n, D); /* dx now: d xmid */
        memset(da, 0, nD * sizeof(double));
        linear_backward(da, grads + o[WO], dx, a->a, params + o[WO], d->panel, n, D, D);
        memset(dq, 0, 3 * nD * sizeof(double));
        doc_attention_backward(dq, dk, dv, dw, da, a->att, a->q, a->k, a->v, n, D, d->H);
        memset(dxn, 0, nD * sizeof(double));
        linear_backward(dxn, grads + o[WQ], dq, a->xn, params + o[WQ], d->panel, n, D, D);
        linear_backward(dxn, grads + o[WK], dk, a->xn, params + o[WK], d->panel, n, D, D);
        linear_backward(dxn, grads + o[WV], dv, a->xn, params + o[WV], d->panel, n, D, D);
        rmsnorm_backward(dx, dxn, a->xin, a->r1, n, D); /* dx now: d xin */
    }
    memset(dxn, 0, nD * sizeof(double));
    rmsnorm_backward(dxn, dx, d->x0, d->r0, n, D);
    for (int32_t p = 0; p < n; p++)
        for (int32_t i = 0; i < D; i++) {
            GRAD(WTE)[(int64_t)d->tok[p] * D + i] += dxn[(int64_t)p * D + i];
            GRAD(WPE)[(int64_t)p * D + i] += dxn[(int64_t)p * D + i];
        }
}

/* ------------------------------------------------------------------------ */
/* entry points: every size, offset and token checked before anything is read */

mg_doc *mg_doc_new(void) { return calloc(1, sizeof(mg_doc)); }

void mg_doc_free(mg_doc *d) {
    if (!d) return;
    free(d->buf), free(d->xbuf), free(d->layers), free(d->offs), free(d->tok), free(d);
}

const char *mg_doc_error(mg_doc *d) { return d ? d->err : "no document kernel (NULL)"; }

int64_t mg_doc_doubles(mg_doc *d) { return d ? d->cap + d->xcap : 0; }

int32_t mg_doc_forward(mg_doc *d, const double *params, int64_t nparams, const int64_t *offs, int32_t noffs,
                       int32_t vocab, int32_t n_embd, int32_t n_head, int32_t n_layer, int32_t block_size,
                       const int32_t *tokens, int32_t ntok, int32_t n, double *loss) {
    if (!d) return MG_EARG;
    d->ready = d->forwarded = 0;
    if (!params || !offs || !tokens) return doc_fail(d, MG_EARG, "doc_forward: a NULL array");
    const int32_t targets = loss != NULL; /* without a loss, the logits alone: no target after the last */
    if (vocab < 1 || vocab > MAX_VOCAB || n_embd < 1 || n_embd > MAX_DIM || n_head < 1 || n_embd % n_head ||
        n_layer < 0 || n_layer > MAX_LAYER || block_size < 1 || block_size > MAX_DIM)
        return doc_fail(d, MG_EARG, "doc_forward: bad model size (vocab %d, n_embd %d, n_head %d, n_layer %d, "
                    "block_size %d)", vocab, n_embd, n_head, n_layer, block_size);
    if (n < 1 || n > block_size || ntok < n + targets)
        return doc_fail(d, MG_EARG, "doc_forward: %d positions need 1 to block_size (%d) and %d tokens, not %d",
                    n, block_size, n + targets, ntok);
    if (noffs != LAYER0 + NLAYERW * n_layer)
        return doc_fail(d, MG_EARG, "doc_forward: %d offsets for %d layers, not %d", LAYER0 + NLAYERW * n_layer,
                    n_layer, noffs);
    const int64_t D = n_embd, size[] = {vocab * D, block_size * D, vocab * D, D * D, D * D, D * D, D * D,
                                        4 * D * D, 4 * D * D};
    for (int32_t i = 0; i < noffs; i++) {
        const int64_t sz = size[i < LAYER0 ? i : LAYER0 + (i - LAYER0) % NLAYERW];
        if (offs[i] < 0 || nparams < sz || offs[i] > nparams - sz)
            return doc_fail(d, MG_EARG, "doc_forward: parameter matrix %d (%lld doubles at %lld) is not in the %lld "
                        "parameters", i, (long long)sz, (long long)offs[i], (long long)nparams);
    }
    for (int32_t i = 0; i < n + targets; i++)
        if (tokens[i] < 0 || tokens[i] >= vocab)
            return doc_fail(d, MG_EARG, "doc_forward: token %d is %d, not in [0, %d)", i, tokens[i], vocab);
    int64_t *o = realloc(d->offs, (size_t)noffs * sizeof *o);
    if (o) d->offs = o;
    int32_t *t = realloc(d->tok, (size_t)(n + 1) * sizeof *t);
    if (t) d->tok = t;
    if (!o || !t) return doc_fail(d, MG_ENOMEM, "cannot allocate a document's tokens");
    memcpy(d->offs, offs, (size_t)noffs * sizeof *o);
    memcpy(d->tok, tokens, (size_t)(n + targets) * sizeof *t);
    d->V = vocab, d->d = n_embd, d->H = n_head, d->L = n_layer, d->n = n, d->nparams = nparams;
    int32_t r = layout(d);
    if (r) return r;
    r = forward(d, params, loss);
    d->forwarded = r == 0;
    d->ready = r == 0 && targets;
    return r;
}

int32_t mg_doc_logits(mg_doc *d, int32_t pos, double *out, int32_t n) {
    if (!d) return MG_EARG;
    if (!d->forwarded || pos < 0 || pos >= d->n || n != d->V || !out)
        return doc_fail(d, MG_EARG, "doc_logits: position %d's %d logits are not the last forward's", pos, n);
    memcpy(out, d->logits + (int64_t)pos * d->V, (size_t)n * sizeof *out);
    return 0;
}

/* A backward's arguments checked against the forward (which it may run from once). */
int32_t doc_check(mg_doc *d, const double *params, double *grads, int64_t nparams) {
    if (!d) return MG_EARG;
    if (!params || !grads) return doc_fail(d, MG_EARG, "doc_backward: a NULL array");
    if (!d->ready) return doc_fail(d, MG_EARG, "a whole-document loss's backward runs once per graph: reset first");
    if (nparams != d->nparams)
        return doc_fail(d, MG_EARG, "doc_backward: %lld parameters, not the forward's %lld", (long long)nparams,
                    (long long)d->nparams);
    return 0;
}

int32_t mg_doc_backward(mg_doc *d, const double *params, double *grads, int64_t nparams, double dloss) {
    int32_t r = doc_check(d, params, grads, nparams);
    if (r) return r;
    d->ready = 0;
    backward(d, params, grads, dloss);
    return 0;
}
