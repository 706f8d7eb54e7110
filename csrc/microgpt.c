/* microgpt.c: the node store, forward ops and backward pass of microgpt_c.

   Exact mode builds the reference's scalar graph node for node (see
   SPEC.md, "The scalar graph"): the same children in the same order, the same
   local gradients, computed with the same IEEE double operations and the C
   library's pow/exp/log. Built without fast-math or FP contraction, so every
   value and gradient is bit-identical to the pure-Python engine. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "microgpt.h"

#define NEW (-1) /* "make a new node" (as opposed to filling a reserved id) */

/* ------------------------------------------------------------------------ */
/* node store */

static int32_t fail(mg_store *s, int32_t code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return code;
}

/* Grow *p (of *cap elements of size sz) to hold at least want elements. */
static int grow(void **p, int32_t *cap, int64_t want, size_t sz) {
    if (want <= *cap) return 0;
    if (want > INT32_MAX) return -1;
    int64_t c = *cap ? *cap : 1024;
    while (c < want) c *= 2;
    if (c > INT32_MAX) c = INT32_MAX;
    void *q = realloc(*p, (size_t)c * sz);
    if (!q) return -1;
    *p = q;
    *cap = (int32_t)c;
    return 0;
}

/* Make room for `nodes` more nodes, `edges` more edges and `tmp` scratch ids,
   before an op writes anything: an op either completes or changes nothing. */
static int32_t reserve(mg_store *s, int64_t nodes, int64_t edges, int64_t tmp) {
    int32_t c = s->cap;
    if (grow((void **)&s->val, &c, s->n + nodes, sizeof *s->val) ||
        (c = s->cap, grow((void **)&s->grad, &c, s->n + nodes, sizeof *s->grad)) ||
        (c = s->cap, grow((void **)&s->e0, &c, s->n + nodes, sizeof *s->e0)) ||
        (c = s->cap, grow((void **)&s->ne, &c, s->n + nodes, sizeof *s->ne)))
        return fail(s, MG_ENOMEM, "cannot allocate %lld more nodes", (long long)nodes);
    s->cap = c;
    c = s->ecap;
    if (grow((void **)&s->ch, &c, (int64_t)s->nedge + edges, sizeof *s->ch) ||
        (c = s->ecap, grow((void **)&s->lg, &c, (int64_t)s->nedge + edges, sizeof *s->lg)))
        return fail(s, MG_ENOMEM, "cannot allocate %lld more edges", (long long)edges);
    s->ecap = c;
    if (grow((void **)&s->tmp, &s->tcap, tmp, sizeof *s->tmp))
        return fail(s, MG_ENOMEM, "cannot allocate scratch space");
    return 0;
}

mg_store *mg_new(int32_t mode) {
    if (mode != MG_EXACT && mode != MG_FAST) return NULL;
    mg_store *s = calloc(1, sizeof *s);
    if (s) s->mode = mode;
    return s;
}

void mg_free(mg_store *s) {
    if (!s) return;
    free(s->val); free(s->grad); free(s->e0); free(s->ne); free(s->ch); free(s->lg);
    free(s->tmp); free(s->seen); free(s->stack); free(s->topo);
    free(s);
}

/* Append n parameter leaves with values v; they survive every reset. */
int32_t mg_params(mg_store *s, const double *v, int32_t n) {
    if (s->n != s->mark) return fail(s, MG_EARG, "parameters must be created before any other node");
    if (n < 1 || !v) return fail(s, MG_EARG, "bad parameter count %d", n);
    int32_t r = reserve(s, n, 0, 0);
    if (r) return r;
    int32_t first = s->n;
    for (int32_t i = 0; i < n; i++) {
        int32_t j = s->n++;
        s->val[j] = v[i]; s->grad[j] = 0.0; s->e0[j] = s->nedge; s->ne[j] = 0;
    }
    s->mark = s->n;
    s->emark = s->nedge;
    return first;
}

/* Drop every node but the parameters. */
int32_t mg_reset(mg_store *s) {
    s->n = s->mark;
    s->nedge = s->emark;
    return 0;
}

#define CHECK(cond, ...) do { if (!(cond)) return fail(s, MG_EARG, __VA_ARGS__); } while (0)
#define CHECK_ID(a) CHECK((a) >= 0 && (a) < s->n, "node id %d is not in [0, %d)", (int)(a), (int)s->n)
#define CHECK_VEC(x, len) CHECK((len) >= 1 && (x) >= 0 && (int64_t)(x) + (len) <= s->n, \
    "vector [%d, %d+%lld) is not within the %d nodes", (int)(x), (int)(x), (long long)(len), (int)s->n)

/* ------------------------------------------------------------------------ */
/* scalar ops: the reference's Value methods. `at` is NEW or a reserved id. */

static int32_t node(mg_store *s, int32_t at, double v, int32_t k) {
    int32_t i = at >= 0 ? at : s->n++;
    s->val[i] = v; s->grad[i] = 0.0; s->e0[i] = s->nedge; s->ne[i] = k;
    s->nedge += k;
    return i;
}

static void edge(mg_store *s, int32_t i, int32_t j, int32_t child, double lg) {
    s->ch[s->e0[i] + j] = child;
    s->lg[s->e0[i] + j] = lg;
}

static int32_t leaf(mg_store *s, double v) { return node(s, NEW, v, 0); }

static int32_t add(mg_store *s, int32_t at, int32_t a, int32_t b) {
    int32_t i = node(s, at, s->val[a] + s->val[b], 2);
    edge(s, i, 0, a, 1.0);
    edge(s, i, 1, b, 1.0);
    return i;
}

static int32_t mul(mg_store *s, int32_t at, int32_t a, int32_t b) {
    int32_t i = node(s, at, s->val[a] * s->val[b], 2);
    edge(s, i, 0, a, s->val[b]);
    edge(s, i, 1, b, s->val[a]);
    return i;
}

static int32_t powc(mg_store *s, int32_t at, int32_t a, double p) {
    double x = s->val[a];
    int32_t i = node(s, at, pow(x, p), 1);
    edge(s, i, 0, a, p * pow(x, p - 1));
    return i;
}

static int32_t log_(mg_store *s, int32_t a) {
    int32_t i = node(s, NEW, log(s->val[a]), 1);
    edge(s, i, 0, a, 1 / s->val[a]);
    return i;
}

static int32_t exp_(mg_store *s, int32_t a) {
    int32_t i = node(s, NEW, exp(s->val[a]), 1);
    edge(s, i, 0, a, exp(s->val[a]));
    return i;
}

static int32_t relu(mg_store *s, int32_t a) {
    double x = s->val[a];
    int32_t i = node(s, NEW, x > 0 ? x : 0.0, 1);
    edge(s, i, 0, a, x > 0 ? 1.0 : 0.0);
    return i;
}

/* Python's sum(x): x[0] + 0 (a leaf), then + x[1], ... left to right.
   n+1 nodes, 2n edges. */
static int32_t sum(mg_store *s, int32_t at, const int32_t *x, int32_t n) {
    int32_t acc = add(s, n == 1 ? at : NEW, x[0], leaf(s, 0.0));
    for (int32_t i = 1; i < n; i++) acc = add(s, i == n - 1 ? at : NEW, acc, x[i]);
    return acc;
}

/* softmax of the n nodes x[] into y[]: (x - max) exp'd, each divided by their
   sum as e * total**-1. 6n+1 nodes, 8n edges. */
static void softmax(mg_store *s, int32_t *y, const int32_t *x, int32_t n, int32_t at) {
    double mx = s->val[x[0]];
    for (int32_t i = 1; i < n; i++) if (s->val[x[i]] > mx) mx = s->val[x[i]];
    for (int32_t i = 0; i < n; i++) y[i] = exp_(s, add(s, NEW, x[i], leaf(s, -mx)));
    int32_t total = sum(s, NEW, y, n);
    for (int32_t i = 0; i < n; i++) y[i] = mul(s, at < 0 ? NEW : at + i, y[i], powc(s, NEW, total, -1));
}

int32_t mg_leaf(mg_store *s, double v) {
    int32_t r = reserve(s, 1, 0, 0);
    return r ? r : leaf(s, v);
}

int32_t mg_add(mg_store *s, int32_t a, int32_t b) {
    CHECK_ID(a); CHECK_ID(b);
    int32_t r = reserve(s, 1, 2, 0);
    return r ? r : add(s, NEW, a, b);
}

int32_t mg_mul(mg_store *s, int32_t a, int32_t b) {
    CHECK_ID(a); CHECK_ID(b);
    int32_t r = reserve(s, 1, 2, 0);
    return r ? r : mul(s, NEW, a, b);
}

int32_t mg_pow(mg_store *s, int32_t a, double p) {
    CHECK_ID(a);
    int32_t r = reserve(s, 1, 1, 0);
    return r ? r : powc(s, NEW, a, p);
}

int32_t mg_log(mg_store *s, int32_t a) {
    CHECK_ID(a);
    int32_t r = reserve(s, 1, 1, 0);
    return r ? r : log_(s, a);
}

int32_t mg_exp(mg_store *s, int32_t a) {
    CHECK_ID(a);
    int32_t r = reserve(s, 1, 1, 0);
    return r ? r : exp_(s, a);
}

int32_t mg_relu(mg_store *s, int32_t a) {
    CHECK_ID(a);
    int32_t r = reserve(s, 1, 1, 0);
    return r ? r : relu(s, a);
}

/* ------------------------------------------------------------------------ */
/* vector ops: each builds, in one call, the nodes the reference's list
   comprehensions build, with its outputs on consecutive ids. */

/* [t + p for t, p in zip(wte[tok], wpe[pos])]: wte has ntok rows of n, wpe npos */
int32_t mg_embed(mg_store *s, int32_t wte, int32_t ntok, int32_t wpe, int32_t npos, int32_t n,
                 int32_t tok, int32_t pos) {
    CHECK_VEC(wte, (int64_t)ntok * n); CHECK_VEC(wpe, (int64_t)npos * n);
    CHECK(tok >= 0 && tok < ntok, "token %d is not in [0, %d)", tok, ntok);
    CHECK(pos >= 0 && pos < npos, "position %d is not in [0, %d)", pos, npos);
    return mg_vadd(s, wte + tok * n, wpe + pos * n, n);
}

/* [a + b for a, b in zip(x, y)] */
int32_t mg_vadd(mg_store *s, int32_t a, int32_t b, int32_t n) {
    CHECK_VEC(a, n); CHECK_VEC(b, n);
    int32_t r = reserve(s, n, 2 * (int64_t)n, 0);
    if (r) return r;
    int32_t out = s->n;
    for (int32_t i = 0; i < n; i++) add(s, NEW, a + i, b + i);
    return out;
}

/* [xi.relu() for xi in x] */
int32_t mg_vrelu(mg_store *s, int32_t x, int32_t n) {
    CHECK_VEC(x, n);
    int32_t r = reserve(s, n, n, 0);
    if (r) return r;
    int32_t out = s->n;
    for (int32_t i = 0; i < n; i++) relu(s, x + i);
    return out;
}

/* [xi * c for xi in x]: a leaf c and a mul per element */
int32_t mg_scale(mg_store *s, int32_t x, int32_t n, double c) {
    CHECK_VEC(x, n);
    int32_t r = reserve(s, 2 * (int64_t)n, 2 * (int64_t)n, 0);
    if (r) return r;
    int32_t out = s->n;
    s->n += n;
    for (int32_t i = 0; i < n; i++) mul(s, out + i, x + i, leaf(s, c));
    return out;
}

/* ms = sum(xi * xi) / n; scale = (ms + 1e-5) ** -0.5; [xi * scale] */
int32_t mg_rmsnorm(mg_store *s, int32_t x, int32_t n) {
    CHECK_VEC(x, n);
    int32_t r = reserve(s, 3 * (int64_t)n + 6, 6 * (int64_t)n + 5, n);
    if (r) return r;
    for (int32_t i = 0; i < n; i++) s->tmp[i] = mul(s, NEW, x + i, x + i);
    int32_t ms = mul(s, NEW, sum(s, NEW, s->tmp, n), leaf(s, pow(n, -1)));
    int32_t scale = powc(s, NEW, add(s, NEW, ms, leaf(s, 1e-5)), -0.5);
    int32_t out = s->n;
    for (int32_t i = 0; i < n; i++) mul(s, NEW, x + i, scale);
    return out;
}

/* [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w] */
int32_t mg_linear(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout) {
    CHECK_VEC(x, nin);
    CHECK(nout >= 1, "linear needs at least one output row, got %d", nout);
    CHECK_VEC(w, (int64_t)nin * nout);
    int64_t cells = (int64_t)nin * nout;
    int32_t r = reserve(s, 2 * cells + nout, 4 * cells, nin);
    if (r) return r;
    int32_t out = s->n;
    s->n += nout;
    for (int32_t o = 0; o < nout; o++) {
        for (int32_t i = 0; i < nin; i++) s->tmp[i] = mul(s, NEW, w + o * nin + i, x + i);
        sum(s, out + o, s->tmp, nin);
    }
    return out;
}

int32_t mg_softmax(mg_store *s, int32_t x, int32_t n) {
    CHECK_VEC(x, n);
    int32_t r = reserve(s, 6 * (int64_t)n + 1, 8 * (int64_t)n, 2 * (int64_t)n);
    if (r) return r;
    int32_t out = s->n;
    s->n += n;
    for (int32_t i = 0; i < n; i++) s->tmp[n + i] = x + i;
    softmax(s, s->tmp, s->tmp + n, n, out);
    return out;
}

/* Causal self-attention of query q (n = n_head * head_dim nodes) over t cached
   keys and values (vectors of n nodes). Per head: logits[t] = dot(q_h, k_h[t])
   / head_dim**0.5, weights = softmax(logits), out[j] = sum_t weights[t] *
   v_h[t][j]; heads concatenated. */
int32_t mg_attention(mg_store *s, int32_t q, int32_t n, int32_t n_head,
                     const int32_t *keys, const int32_t *values, int32_t t) {
    CHECK(n_head >= 1 && n >= 1 && n % n_head == 0, "n_embd %d is not a multiple of n_head %d", n, n_head);
    CHECK(t >= 1 && keys && values, "attention needs at least one cached position, got %d", t);
    CHECK_VEC(q, n);
    for (int32_t i = 0; i < t; i++) { CHECK_VEC(keys[i], n); CHECK_VEC(values[i], n); }
    int32_t hd = n / n_head;
    double c = pow(pow(hd, 0.5), -1); /* "/ head_dim**0.5" is "* (head_dim**0.5)**-1" */
    int64_t nodes = n_head * (t * (2 * (int64_t)hd + 3) + 6 * (int64_t)t + 1) + n * (2 * (int64_t)t + 1);
    int64_t edges = n_head * (t * (4 * (int64_t)hd + 2) + 8 * (int64_t)t) + n * 4 * (int64_t)t;
    int32_t r = reserve(s, nodes, edges, (hd > t ? hd : t) + 2 * (int64_t)t);
    if (r) return r;
    int32_t out = s->n;
    s->n += n;
    int32_t *logit = s->tmp, *wt = logit + t, *prod = wt + t;
    for (int32_t h = 0; h < n_head; h++) {
        int32_t hs = h * hd;
        for (int32_t i = 0; i < t; i++) {
            for (int32_t j = 0; j < hd; j++) prod[j] = mul(s, NEW, q + hs + j, keys[i] + hs + j);
            logit[i] = mul(s, NEW, sum(s, NEW, prod, hd), leaf(s, c));
        }
        softmax(s, wt, logit, t, NEW);
        for (int32_t j = 0; j < hd; j++) {
            for (int32_t i = 0; i < t; i++) prod[i] = mul(s, NEW, wt[i], values[i] + hs + j);
            sum(s, out + hs + j, prod, t);
        }
    }
    return out;
}

/* -softmax(logits)[target].log(), i.e. log(p) * -1 */
int32_t mg_nll(mg_store *s, int32_t logits, int32_t n, int32_t target) {
    CHECK_VEC(logits, n);
    CHECK(target >= 0 && target < n, "target %d is not in [0, %d)", target, n);
    int32_t r = reserve(s, 6 * (int64_t)n + 4, 8 * (int64_t)n + 3, 2 * (int64_t)n);
    if (r) return r;
    for (int32_t i = 0; i < n; i++) s->tmp[n + i] = logits + i;
    softmax(s, s->tmp, s->tmp + n, n, NEW);
    return mul(s, NEW, log_(s, s->tmp[target]), leaf(s, -1));
}

/* (1 / n) * sum(x): the mean of n scalar nodes */
int32_t mg_mean(mg_store *s, const int32_t *x, int32_t n) {
    CHECK(n >= 1 && x, "mean of %d nodes", n);
    for (int32_t i = 0; i < n; i++) CHECK_ID(x[i]);
    int32_t r = reserve(s, (int64_t)n + 3, 2 * (int64_t)n + 2, 0);
    if (r) return r;
    return mul(s, NEW, sum(s, NEW, x, n), leaf(s, 1.0 / n));
}

/* ------------------------------------------------------------------------ */
/* backward */

/* The reference's order: a depth-first post-order from the root (children in
   order, each node once), visited in reverse. The order in which a shared
   child receives its contributions decides the last bits, so it is kept. */
int32_t mg_backward(mg_store *s, int32_t root) {
    CHECK_ID(root);
    int32_t c = s->scap;
    if (grow((void **)&s->seen, &c, s->n, sizeof *s->seen) ||
        (c = s->scap, grow((void **)&s->topo, &c, s->n, sizeof *s->topo)) ||
        (c = s->scap, grow((void **)&s->stack, &c, s->n, 2 * sizeof *s->stack)))
        return fail(s, MG_ENOMEM, "cannot allocate the backward pass's buffers");
    if (c > s->scap) memset(s->seen + s->scap, 0, (size_t)(c - s->scap) * sizeof *s->seen);
    s->scap = c;
    if (++s->epoch == 0) { /* stamps wrapped: clear them */
        memset(s->seen, 0, (size_t)s->scap * sizeof *s->seen);
        s->epoch = 1;
    }
    uint32_t ep = s->epoch;
    int32_t *st = s->stack, sp = 0, nt = 0;
    s->seen[root] = ep;
    st[0] = root; st[1] = 0; sp = 1;
    while (sp) {
        int32_t v = st[2 * sp - 2], k = st[2 * sp - 1];
        if (k < s->ne[v]) {
            st[2 * sp - 1] = k + 1;
            int32_t c2 = s->ch[s->e0[v] + k];
            if (s->seen[c2] != ep) {
                s->seen[c2] = ep;
                st[2 * sp] = c2; st[2 * sp + 1] = 0; sp++;
            }
        } else {
            s->topo[nt++] = v;
            sp--;
        }
    }
    s->grad[root] = 1.0;
    for (int32_t t = nt - 1; t >= 0; t--) {
        int32_t v = s->topo[t];
        double g = s->grad[v];
        for (int32_t e = s->e0[v], end = e + s->ne[v]; e < end; e++) s->grad[s->ch[e]] += s->lg[e] * g;
    }
    return 0;
}

int32_t mg_vpow(mg_store *s, double *out, const double *x, int64_t n, double p) {
    CHECK(out && x && n >= 0, "bad array for pow");
    for (int64_t i = 0; i < n; i++) out[i] = pow(x[i], p);
    return 0;
}
