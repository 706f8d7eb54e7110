/* microgpt.c: the node store, forward ops and backward pass of microgpt_c.

   Exact mode builds the reference's scalar graph node for node (SPEC.md, "The
   scalar graph"): the same children in the same order, the same local
   gradients, from the same IEEE double operations and the C library's
   pow/exp/log. Built without fast-math or FP contraction, so every value and
   gradient is bit-identical to the pure-Python engine.

   Every op call goes through call(), which can record it: a recorded sequence
   (a program: one document's forward pass) is replayed by one mg_replay call,
   which is what takes the per-op Python overhead out of training. */
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "microgpt.h"

#define NEW (-1) /* make a new node (rather than fill a reserved id) */

/* ------------------------------------------------------------------------ */
/* node store */

static int32_t fail(mg_store *s, int32_t code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof s->err, fmt, ap);
    va_end(ap);
    return code;
}

/* Grow *p, *cap elements of size sz, to hold `want` elements (at most max). */
static int grow(void *p, int64_t *cap, int64_t want, size_t sz, int64_t max) {
    if (want <= *cap) return 0;
    if (want > max) return -1;
    int64_t c = *cap ? *cap : 1024;
    while (c < want) c *= 2;
    if (c > max) c = max;
    void *q = realloc(*(void **)p, (size_t)c * sz);
    if (!q) return -1;
    *(void **)p = q;
    *cap = c;
    return 0;
}

/* Make room for `nodes` more nodes and `tmp` scratch ids before an op writes
   anything: an op either completes or changes nothing. */
static int32_t reserve(mg_store *s, int64_t nodes, int64_t tmp) {
    int64_t want = s->n + nodes, c = s->cap;
    if (grow(&s->val, &c, want, sizeof *s->val, INT32_MAX) ||
        (c = s->cap, grow(&s->grad, &c, want, sizeof *s->grad, INT32_MAX)) ||
        (c = s->cap, grow(&s->kid, &c, want, sizeof *s->kid, INT32_MAX)) ||
        (c = s->cap, grow(&s->lg, &c, want, sizeof *s->lg, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate %lld more nodes", (long long)nodes);
    s->cap = c;
    if (grow(&s->tmp, &s->tmpcap, tmp, sizeof *s->tmp, INT32_MAX))
        return fail(s, MG_ENOMEM, "cannot allocate scratch space");
    return 0;
}

/* A node with value v and children a, b (-1: none), local gradients ga, gb:
   a new one, or the reserved id `at`. Capacity was reserved by the op. */
static inline int32_t node(mg_store *s, int32_t at, double v, int32_t a, double ga, int32_t b, double gb) {
    int32_t i = at >= 0 ? at : s->n++;
    s->nonfinite |= !isfinite(v) | !isfinite(ga) | !isfinite(gb);
    s->val[i] = v;
    s->grad[i] = 0.0;
    s->kid[i][0] = a; s->kid[i][1] = b;
    s->lg[i][0] = ga; s->lg[i][1] = gb;
    return i;
}

static inline int32_t leaf(mg_store *s, double v) { return node(s, NEW, v, -1, 0, -1, 0); }

/* Fast mode: k fused nodes on consecutive ids, values to be filled by the op,
   no children (their op's backward kernel knows what they depend on). */
static int32_t fresh(mg_store *s, int32_t k) {
    int32_t first = s->n;
    for (int32_t i = 0; i < k; i++) leaf(s, 0.0);
    return first;
}

mg_store *mg_new(int32_t mode) {
    if (mode != MG_EXACT && mode != MG_FAST) return NULL;
    mg_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->mode = mode;
    return s;
}

void mg_free(mg_store *s) {
    if (!s) return;
    for (int32_t i = 0; i < s->nprog; i++) free(s->progs[i].code);
    free(s->progs);
    free(s->val); free(s->grad); free(s->kid); free(s->lg);
    free(s->tape); free(s->tok); free(s->tmp); free(s->seen); free(s->stack); free(s->topo);
    free(s);
}

/* Append n parameter leaves with values v; they survive every reset. */
int32_t mg_params(mg_store *s, const double *v, int32_t n) {
    if (!s) return MG_EARG;
    if (s->n != s->mark || s->recording) return fail(s, MG_EARG, "parameters must be created before any other node");
    if (n < 1 || !v) return fail(s, MG_EARG, "bad parameter count %d", n);
    for (int32_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return fail(s, MG_EMATH, "parameter %d is %g, not finite", i, v[i]);
    int32_t r = reserve(s, n, 0);
    if (r) return r;
    int32_t first = s->n;
    for (int32_t i = 0; i < n; i++) leaf(s, v[i]);
    s->mark = s->n;
    return first;
}

/* Drop every node but the parameters. */
int32_t mg_reset(mg_store *s) {
    if (!s) return MG_EARG;
    s->n = s->mark;
    s->ntape = 0;
    s->recording = 0;
    s->backed = 0;
    return 0;
}

/* The tokens that embed and nll read: a replayed program reads new ones. */
int32_t mg_tokens(mg_store *s, const int32_t *tok, int32_t n) {
    if (!s) return MG_EARG;
    if (n < 0 || (n && !tok)) return fail(s, MG_EARG, "bad token count %d", n);
    if (grow(&s->tok, &s->tokcap, n, sizeof *s->tok, INT32_MAX)) return fail(s, MG_ENOMEM, "cannot allocate tokens");
    if (n) memcpy(s->tok, tok, (size_t)n * sizeof *tok);
    s->ntok = n;
    return 0;
}

#define CHECK(cond, ...) do { if (!(cond)) return fail(s, MG_EARG, __VA_ARGS__); } while (0)
#define CHECK_ID(a) CHECK((a) >= 0 && (a) < s->n, "node id %d is not in [0, %d)", (int)(a), (int)s->n)
#define CHECK_VEC(x, len) CHECK((len) >= 1 && (x) >= 0 && (int64_t)(x) + (len) <= s->n, \
    "vector [%d, %d+%lld) is not within the %d nodes", (int)(x), (int)(x), (long long)(len), (int)s->n)
#define CHECK_NARGS(na, want) CHECK((na) == (want), "op given %d arguments, wants %d", (int)(na), (int)(want))

/* ------------------------------------------------------------------------ */
/* scalar ops: the reference's Value methods. `at` is NEW or a reserved id. */

static inline int32_t add(mg_store *s, int32_t at, int32_t a, int32_t b) {
    return node(s, at, s->val[a] + s->val[b], a, 1.0, b, 1.0);
}

static inline int32_t mul(mg_store *s, int32_t at, int32_t a, int32_t b) {
    double x = s->val[a], y = s->val[b];
    return node(s, at, x * y, a, y, b, x);
}

static int32_t powc(mg_store *s, int32_t at, int32_t a, double p) {
    double x = s->val[a];
    return node(s, at, pow(x, p), a, p * pow(x, p - 1), -1, 0);
}

static int32_t log_(mg_store *s, int32_t a) {
    double x = s->val[a];
    return node(s, NEW, log(x), a, 1 / x, -1, 0);
}

static int32_t exp_(mg_store *s, int32_t a) {
    double x = s->val[a];
    return node(s, NEW, exp(x), a, exp(x), -1, 0);
}

static int32_t relu(mg_store *s, int32_t a) {
    double x = s->val[a];
    return node(s, NEW, x > 0 ? x : 0.0, a, x > 0 ? 1.0 : 0.0, -1, 0);
}

static int32_t tanh_(mg_store *s, int32_t a) {
    double t = tanh(s->val[a]);
    return node(s, NEW, t, a, 1 - pow(t, 2), -1, 0);
}

/* Python's sum(x): x[0] + 0 (a leaf), then + x[1], ... left to right.
   n+1 nodes. */
static int32_t sum(mg_store *s, int32_t at, const int32_t *x, int32_t n) {
    double v = s->val[x[0]] + 0.0; /* the running value stays in a register */
    int32_t acc = node(s, n == 1 ? at : NEW, v, x[0], 1.0, leaf(s, 0.0), 1.0);
    for (int32_t i = 1; i < n; i++) {
        v = v + s->val[x[i]];
        acc = node(s, i == n - 1 ? at : NEW, v, acc, 1.0, x[i], 1.0);
    }
    return acc;
}

/* softmax of the n nodes x[] into y[] (at[i] if at >= 0): exp(x - max), each
   divided by their sum as e * total**-1. 6n+1 nodes. */
static void softmax(mg_store *s, int32_t *y, const int32_t *x, int32_t n, int32_t at) {
    double mx = s->val[x[0]];
    for (int32_t i = 1; i < n; i++) if (s->val[x[i]] > mx) mx = s->val[x[i]];
    for (int32_t i = 0; i < n; i++) y[i] = exp_(s, add(s, NEW, x[i], leaf(s, -mx)));
    int32_t total = sum(s, NEW, y, n);
    for (int32_t i = 0; i < n; i++) y[i] = mul(s, at < 0 ? NEW : at + i, y[i], powc(s, NEW, total, -1));
}

/* The values softmax() gives, for fast mode: y may be x. */
static void softmax_vals(double *y, const double *x, int32_t n) {
    double mx = x[0], total = 0.0;
    for (int32_t i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    for (int32_t i = 0; i < n; i++) total = total + (y[i] = exp(x[i] + -mx));
    double inv = pow(total, -1);
    for (int32_t i = 0; i < n; i++) y[i] = y[i] * inv;
}

static double arg_double(const int32_t *a) {
    double d;
    memcpy(&d, a, sizeof d);
    return d;
}

static int32_t op_leaf(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 2);
    int32_t r = reserve(s, 1, 0);
    return r ? r : leaf(s, arg_double(a)); /* a non-finite value is caught by call() */
}

/* the ops with nothing to check but their operands' ids: one node each */
#define BINARY_OP(name, make) static int32_t name(mg_store *s, const int32_t *a, int32_t na) { \
    CHECK_NARGS(na, 2); CHECK_ID(a[0]); CHECK_ID(a[1]);                                      \
    int32_t r = reserve(s, 1, 0);                                                             \
    return r ? r : make(s, NEW, a[0], a[1]); }
#define UNARY_OP(name, make) static int32_t name(mg_store *s, const int32_t *a, int32_t na) { \
    CHECK_NARGS(na, 1); CHECK_ID(a[0]);                                                      \
    int32_t r = reserve(s, 1, 0);                                                            \
    return r ? r : make(s, a[0]); }
BINARY_OP(op_add, add)
BINARY_OP(op_mul, mul)
UNARY_OP(op_exp, exp_)
UNARY_OP(op_relu, relu)
UNARY_OP(op_tanh, tanh_)

static int32_t op_pow(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 3); CHECK_ID(a[0]);
    double x = s->val[a[0]], p = arg_double(a + 1);
    if (x < 0 && p != floor(p)) return fail(s, MG_EMATH, "%g ** %g: a negative base needs a whole exponent", x, p);
    if (x == 0 && p < 0) return fail(s, MG_EMATH, "0 ** %g: zero to a negative power", p);
    int32_t r = reserve(s, 1, 0);
    return r ? r : powc(s, NEW, a[0], p);
}

static int32_t op_log(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 1); CHECK_ID(a[0]);
    if (!(s->val[a[0]] > 0)) return fail(s, MG_EMATH, "log(%g): not positive", s->val[a[0]]);
    int32_t r = reserve(s, 1, 0);
    return r ? r : log_(s, a[0]);
}

/* ------------------------------------------------------------------------ */
/* vector ops: each builds, in one call, the nodes the reference's list
   comprehensions build, with its outputs on consecutive ids. */

/* [a + b for a, b in zip(x, y)]: (a, b, n) */
static int32_t op_vadd(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 3);
    int32_t x = a[0], y = a[1], n = a[2];
    CHECK_VEC(x, n); CHECK_VEC(y, n);
    int32_t r = reserve(s, n, 0);
    if (r) return r;
    int32_t out = s->n;
    for (int32_t i = 0; i < n; i++) add(s, NEW, x + i, y + i);
    return out;
}

/* [t + p for t, p in zip(wte[tok], wpe[pos])]: (wte, ntok, wpe, npos, n, tok
   index, pos); wte has ntok rows of n, wpe npos rows */
static int32_t op_embed(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 7);
    int32_t wte = a[0], ntok = a[1], wpe = a[2], npos = a[3], n = a[4], ti = a[5], pos = a[6];
    CHECK_VEC(wte, (int64_t)ntok * n); CHECK_VEC(wpe, (int64_t)npos * n);
    CHECK(ti >= 0 && ti < s->ntok, "token index %d is not in [0, %d)", ti, s->ntok);
    int32_t tok = s->tok[ti];
    CHECK(tok >= 0 && tok < ntok, "token %d is not in [0, %d)", tok, ntok);
    CHECK(pos >= 0 && pos < npos, "position %d is not in [0, %d)", pos, npos);
    int32_t b[3] = {wte + tok * n, wpe + pos * n, n};
    return op_vadd(s, b, 3);
}

/* [xi.relu() for xi in x]: (x, n) */
static int32_t op_vrelu(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 2);
    int32_t x = a[0], n = a[1];
    CHECK_VEC(x, n);
    int32_t r = reserve(s, n, 0);
    if (r) return r;
    int32_t out = s->n;
    for (int32_t i = 0; i < n; i++) relu(s, x + i);
    return out;
}

/* [xi * c for xi in x]: a leaf c and a mul per element; (x, n, c) */
static int32_t op_scale(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 4);
    int32_t x = a[0], n = a[1];
    double c = arg_double(a + 2);
    CHECK_VEC(x, n);
    int32_t r = reserve(s, 2 * (int64_t)n, 0);
    if (r) return r;
    int32_t out = s->n;
    s->n += n;
    for (int32_t i = 0; i < n; i++) mul(s, out + i, x + i, leaf(s, c));
    return out;
}

/* ms = sum(xi * xi) / n; scale = (ms + 1e-5) ** -0.5; [xi * scale]: (x, n).
   Fast: one fused node per output. */
static int32_t op_rmsnorm(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 2);
    int32_t x = a[0], n = a[1];
    CHECK_VEC(x, n);
    if (s->mode == MG_FAST) {
        int32_t r = reserve(s, n, 0);
        if (r) return r;
        double ss = 0.0;
        for (int32_t i = 0; i < n; i++) ss = ss + s->val[x + i] * s->val[x + i];
        double scale = pow(ss * pow(n, -1) + 1e-5, -0.5);
        int32_t out = fresh(s, n);
        for (int32_t i = 0; i < n; i++) s->val[out + i] = s->val[x + i] * scale;
        return out;
    }
    int32_t r = reserve(s, 3 * (int64_t)n + 6, n);
    if (r) return r;
    for (int32_t i = 0; i < n; i++) s->tmp[i] = mul(s, NEW, x + i, x + i);
    /* "/ len(x)" is "* len(x)**-1", a float pow in Python */
    int32_t ms = mul(s, NEW, sum(s, NEW, s->tmp, n), leaf(s, pow(n, -1)));
    int32_t scale = powc(s, NEW, add(s, NEW, ms, leaf(s, 1e-5)), -0.5);
    int32_t out = s->n;
    for (int32_t i = 0; i < n; i++) mul(s, NEW, x + i, scale);
    return out;
}

/* [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]: (x, nin, w, nout).
   Fast: each output one n-ary dot-product node. */
static int32_t op_linear(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 4);
    int32_t x = a[0], nin = a[1], w = a[2], nout = a[3];
    CHECK_VEC(x, nin);
    CHECK(nout >= 1, "linear needs at least one output row, got %d", nout);
    int64_t cells = (int64_t)nin * nout;
    CHECK_VEC(w, cells);
    if (s->mode == MG_FAST) {
        int32_t r = reserve(s, nout, 0);
        if (r) return r;
        int32_t out = fresh(s, nout), o = 0;
        const double *v = s->val, *xv = v + x, *wo = v + w;
        /* four rows at a time: four independent sums in flight, each summed
           in the exact order */
        for (; o + 4 <= nout; o += 4, wo += 4 * (int64_t)nin) {
            double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
            for (int32_t i = 0; i < nin; i++) {
                a0 = a0 + wo[i] * xv[i];
                a1 = a1 + wo[nin + i] * xv[i];
                a2 = a2 + wo[2 * nin + i] * xv[i];
                a3 = a3 + wo[3 * nin + i] * xv[i];
            }
            s->val[out + o] = a0; s->val[out + o + 1] = a1;
            s->val[out + o + 2] = a2; s->val[out + o + 3] = a3;
        }
        for (; o < nout; o++, wo += nin) {
            double acc = 0.0;
            for (int32_t i = 0; i < nin; i++) acc = acc + wo[i] * xv[i];
            s->val[out + o] = acc;
        }
        return out;
    }
    int32_t r = reserve(s, 2 * cells + nout, nin);
    if (r) return r;
    int32_t out = s->n;
    s->n += nout;
    for (int32_t o = 0; o < nout; o++) {
        for (int32_t i = 0; i < nin; i++) s->tmp[i] = mul(s, NEW, w + o * nin + i, x + i);
        sum(s, out + o, s->tmp, nin);
    }
    return out;
}

/* (x, n). Fast: fused nodes. */
static int32_t op_softmax(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 2);
    int32_t x = a[0], n = a[1];
    CHECK_VEC(x, n);
    if (s->mode == MG_FAST) {
        int32_t r = reserve(s, n, 0);
        if (r) return r;
        int32_t out = fresh(s, n);
        softmax_vals(s->val + out, s->val + x, n);
        return out;
    }
    int32_t r = reserve(s, 6 * (int64_t)n + 1, 2 * (int64_t)n);
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
   v_h[t][j]; heads concatenated. (q, n, n_head, t, keys[t], values[t]).
   Fast: the n outputs, then each head's t attention weights as fused nodes. */
static int32_t op_attention(mg_store *s, const int32_t *a, int32_t na) {
    CHECK(na >= 4, "attention given %d arguments", na);
    int32_t q = a[0], n = a[1], n_head = a[2], t = a[3];
    CHECK(t >= 1 && na == 4 + 2 * (int64_t)t, "attention needs t >= 1 keys and values, got t = %d", t);
    const int32_t *keys = a + 4, *values = a + 4 + t;
    CHECK(n_head >= 1 && n >= 1 && n % n_head == 0, "n_embd %d is not a multiple of n_head %d", n, n_head);
    CHECK_VEC(q, n);
    for (int32_t i = 0; i < t; i++) { CHECK_VEC(keys[i], n); CHECK_VEC(values[i], n); }
    int32_t hd = n / n_head;
    double c = pow(pow(hd, 0.5), -1); /* "/ head_dim**0.5" is "* (head_dim**0.5)**-1" */
    if (s->mode == MG_FAST) {
        int32_t r = reserve(s, n + (int64_t)n_head * t, 0);
        if (r) return r;
        int32_t out = fresh(s, n), wts = fresh(s, n_head * t);
        double *v = s->val;
        for (int32_t h = 0; h < n_head; h++) {
            int32_t hs = h * hd;
            double *w = v + wts + h * t;
            for (int32_t i = 0; i < t; i++) {
                double d = 0.0;
                for (int32_t j = 0; j < hd; j++) d = d + v[q + hs + j] * v[keys[i] + hs + j];
                w[i] = d * c;
            }
            softmax_vals(w, w, t);
            for (int32_t j = 0; j < hd; j++) {
                double acc = 0.0;
                for (int32_t i = 0; i < t; i++) acc = acc + w[i] * v[values[i] + hs + j];
                v[out + hs + j] = acc;
            }
        }
        return out;
    }
    int64_t nodes = n_head * (t * (2 * (int64_t)hd + 3) + 6 * (int64_t)t + 1) + n * (2 * (int64_t)t + 1);
    int32_t r = reserve(s, nodes, (hd > t ? hd : t) + 2 * (int64_t)t);
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

/* -softmax(logits)[target].log(), i.e. log(p) * -1: (logits, n, target index).
   Fast: one fused softmax + cross-entropy node, followed by n nodes holding
   its local gradients toward the logits, p - onehot(target). */
static int32_t op_nll(mg_store *s, const int32_t *a, int32_t na) {
    CHECK_NARGS(na, 3);
    int32_t x = a[0], n = a[1], ti = a[2];
    CHECK_VEC(x, n);
    CHECK(ti >= 0 && ti < s->ntok, "token index %d is not in [0, %d)", ti, s->ntok);
    int32_t target = s->tok[ti];
    CHECK(target >= 0 && target < n, "target %d is not in [0, %d)", target, n);
    if (s->mode == MG_FAST) {
        int32_t r = reserve(s, 1 + (int64_t)n, 0);
        if (r) return r;
        int32_t out = fresh(s, 1 + n);
        double *p = s->val + out + 1;
        softmax_vals(p, s->val + x, n);
        s->val[out] = log(p[target]) * -1;
        p[target] -= 1.0;
        return out;
    }
    int32_t r = reserve(s, 6 * (int64_t)n + 4, 2 * (int64_t)n);
    if (r) return r;
    for (int32_t i = 0; i < n; i++) s->tmp[n + i] = x + i;
    softmax(s, s->tmp, s->tmp + n, n, NEW);
    return mul(s, NEW, log_(s, s->tmp[target]), leaf(s, -1));
}

/* (1 / n) * sum(x): the mean of n scalar nodes; (n, x[n]). Fast: one node. */
static int32_t op_mean(mg_store *s, const int32_t *a, int32_t na) {
    CHECK(na >= 2 && na == 1 + (int64_t)a[0], "mean given %d arguments", na);
    int32_t n = a[0];
    const int32_t *x = a + 1;
    for (int32_t i = 0; i < n; i++) CHECK_ID(x[i]);
    if (s->mode == MG_FAST) {
        int32_t r = reserve(s, 1, 0);
        if (r) return r;
        double acc = 0.0;
        for (int32_t i = 0; i < n; i++) acc = acc + s->val[x[i]];
        int32_t out = fresh(s, 1);
        s->val[out] = acc * (1.0 / n);
        return out;
    }
    int32_t r = reserve(s, (int64_t)n + 3, 0);
    if (r) return r;
    return mul(s, NEW, sum(s, NEW, x, n), leaf(s, 1.0 / n));
}

/* ------------------------------------------------------------------------ */
/* op calls: the one entry to every op, recording it when asked */

enum { OP_LEAF, OP_ADD, OP_MUL, OP_POW, OP_LOG, OP_EXP, OP_RELU, OP_TANH, OP_EMBED, OP_VADD,
       OP_VRELU, OP_SCALE, OP_RMSNORM, OP_LINEAR, OP_SOFTMAX, OP_ATTENTION, OP_NLL, OP_MEAN, NOPS };
static const char *const OPNAMES[NOPS] = {
    "leaf", "add", "mul", "pow", "log", "exp", "relu", "tanh", "embed", "vadd",
    "vrelu", "scale", "rmsnorm", "linear", "softmax", "attention", "nll", "mean",
};

typedef int32_t (*op_fn)(mg_store *, const int32_t *, int32_t);
static const op_fn OPS[NOPS] = {
    op_leaf, op_add, op_mul, op_pow, op_log, op_exp, op_relu, op_tanh, op_embed, op_vadd,
    op_vrelu, op_scale, op_rmsnorm, op_linear, op_softmax, op_attention, op_nll, op_mean,
};

/* Run op with its na arguments a. In fast mode (for backward) and while
   recording (for replay), also append (op, na, output, a..., na) to the tape:
   the trailing na lets backward walk it from the end. An op whose nodes hold
   a non-finite value or local gradient (overflow, say) is undone: an error. */
static int32_t call(mg_store *s, int32_t op, const int32_t *a, int32_t na) {
    if (!s) return MG_EARG;
    int64_t at = s->ntape;
    int32_t n0 = s->n;
    int taping = s->recording || s->mode == MG_FAST;
    if (taping) {
        if (grow(&s->tape, &s->tcap, at + 4 + (int64_t)na, sizeof *s->tape, INT64_MAX / 8))
            return fail(s, MG_ENOMEM, "cannot allocate the tape");
        s->tape[at] = op; s->tape[at + 1] = na;
        memcpy(s->tape + at + 3, a, (size_t)na * sizeof *a);
        s->tape[at + 3 + na] = na;
    }
    s->nonfinite = 0;
    int32_t r = OPS[op](s, a, na);
    if (r < 0) return r;
    if (s->mode == MG_FAST) /* fused nodes get their values after node() made them */
        for (int32_t i = n0; i < s->n; i++) s->nonfinite |= !isfinite(s->val[i]);
    if (s->nonfinite) { /* undo the op; name the first bad node */
        int32_t i = n0;
        while (i < s->n - 1 && isfinite(s->val[i]) && isfinite(s->lg[i][0]) && isfinite(s->lg[i][1])) i++;
        fail(s, MG_EMATH, "%s made a non-finite number (node %d: value %g, local gradients %g, %g)",
             OPNAMES[op], i, s->val[i], s->lg[i][0], s->lg[i][1]);
        s->n = n0;
        return MG_EMATH;
    }
    if (taping) {
        s->tape[at + 2] = r;
        s->ntape = at + 4 + na;
    }
    return r;
}

int32_t mg_leaf(mg_store *s, double v) { int32_t a[2]; memcpy(a, &v, sizeof v); return call(s, OP_LEAF, a, 2); }
int32_t mg_add(mg_store *s, int32_t x, int32_t y) { int32_t a[] = {x, y}; return call(s, OP_ADD, a, 2); }
int32_t mg_mul(mg_store *s, int32_t x, int32_t y) { int32_t a[] = {x, y}; return call(s, OP_MUL, a, 2); }
int32_t mg_pow(mg_store *s, int32_t x, double p) {
    int32_t a[3] = {x};
    memcpy(a + 1, &p, sizeof p);
    return call(s, OP_POW, a, 3);
}
int32_t mg_log(mg_store *s, int32_t x) { return call(s, OP_LOG, &x, 1); }
int32_t mg_exp(mg_store *s, int32_t x) { return call(s, OP_EXP, &x, 1); }
int32_t mg_relu(mg_store *s, int32_t x) { return call(s, OP_RELU, &x, 1); }
int32_t mg_tanh(mg_store *s, int32_t x) { return call(s, OP_TANH, &x, 1); }
int32_t mg_embed(mg_store *s, int32_t wte, int32_t ntok, int32_t wpe, int32_t npos, int32_t n,
                 int32_t tok, int32_t pos) {
    int32_t a[] = {wte, ntok, wpe, npos, n, tok, pos};
    return call(s, OP_EMBED, a, 7);
}
int32_t mg_vadd(mg_store *s, int32_t x, int32_t y, int32_t n) { int32_t a[] = {x, y, n}; return call(s, OP_VADD, a, 3); }
int32_t mg_vrelu(mg_store *s, int32_t x, int32_t n) { int32_t a[] = {x, n}; return call(s, OP_VRELU, a, 2); }
int32_t mg_scale(mg_store *s, int32_t x, int32_t n, double c) {
    int32_t a[4] = {x, n};
    memcpy(a + 2, &c, sizeof c);
    return call(s, OP_SCALE, a, 4);
}
int32_t mg_rmsnorm(mg_store *s, int32_t x, int32_t n) { int32_t a[] = {x, n}; return call(s, OP_RMSNORM, a, 2); }
int32_t mg_linear(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout) {
    int32_t a[] = {x, nin, w, nout};
    return call(s, OP_LINEAR, a, 4);
}
int32_t mg_softmax(mg_store *s, int32_t x, int32_t n) { int32_t a[] = {x, n}; return call(s, OP_SOFTMAX, a, 2); }
int32_t mg_nll(mg_store *s, int32_t x, int32_t n, int32_t target) {
    int32_t a[] = {x, n, target};
    return call(s, OP_NLL, a, 3);
}

int32_t mg_attention(mg_store *s, int32_t q, int32_t n, int32_t n_head,
                     const int32_t *keys, const int32_t *values, int32_t t) {
    if (!s) return MG_EARG;
    if (t < 1 || t > (INT32_MAX - 4) / 2 || !keys || !values) return fail(s, MG_EARG, "attention over %d positions", t);
    int32_t *a = malloc((4 + 2 * (size_t)t) * sizeof *a);
    if (!a) return fail(s, MG_ENOMEM, "cannot allocate attention arguments");
    a[0] = q; a[1] = n; a[2] = n_head; a[3] = t;
    memcpy(a + 4, keys, (size_t)t * sizeof *a);
    memcpy(a + 4 + t, values, (size_t)t * sizeof *a);
    int32_t r = call(s, OP_ATTENTION, a, 4 + 2 * t);
    free(a);
    return r;
}

int32_t mg_mean(mg_store *s, const int32_t *x, int32_t n) {
    if (!s) return MG_EARG;
    if (n < 1 || n > INT32_MAX - 1 || !x) return fail(s, MG_EARG, "mean of %d nodes", n);
    int32_t *a = malloc((1 + (size_t)n) * sizeof *a);
    if (!a) return fail(s, MG_ENOMEM, "cannot allocate mean arguments");
    a[0] = n;
    memcpy(a + 1, x, (size_t)n * sizeof *a);
    int32_t r = call(s, OP_MEAN, a, 1 + n);
    free(a);
    return r;
}

int32_t mg_record_begin(mg_store *s) {
    if (!s) return MG_EARG;
    if (s->recording) return fail(s, MG_EARG, "already recording");
    s->recording = 1;
    s->rec_tape = s->ntape;
    s->rec_n = s->n;
    return 0;
}

/* Save the calls since mg_record_begin as a program; returns its index. */
int32_t mg_record_end(mg_store *s) {
    if (!s) return MG_EARG;
    if (!s->recording) return fail(s, MG_EARG, "not recording");
    s->recording = 0;
    int64_t len = s->ntape - s->rec_tape, c = s->pcap;
    if (s->mode == MG_EXACT) s->ntape = s->rec_tape; /* the tape was only for this */
    if (grow(&s->progs, &c, s->nprog + 1, sizeof *s->progs, INT32_MAX)) return fail(s, MG_ENOMEM, "cannot allocate a program");
    s->pcap = c;
    int32_t *code = malloc((size_t)(len ? len : 1) * sizeof *code);
    if (!code) return fail(s, MG_ENOMEM, "cannot allocate a program");
    if (len) memcpy(code, s->tape + s->rec_tape, (size_t)len * sizeof *code);
    s->progs[s->nprog] = (mg_prog){code, len, s->rec_n};
    return s->nprog++;
}

/* Run a recorded program again: from the same node count, every call makes the
   same node ids, reading the current tokens and parameter values. */
int32_t mg_replay(mg_store *s, int32_t prog) {
    if (!s) return MG_EARG;
    if (prog < 0 || prog >= s->nprog) return fail(s, MG_EARG, "no program %d", prog);
    mg_prog *p = &s->progs[prog];
    if (s->n != p->start) return fail(s, MG_EARG, "program %d starts at node %d, the store is at %d", prog, p->start, s->n);
    for (int64_t i = 0; i < p->len; ) {
        int32_t op = p->code[i], na = p->code[i + 1];
        if (op < 0 || op >= NOPS || na < 0 || i + 4 + na > p->len || p->code[i + 3 + na] != na)
            return fail(s, MG_EARG, "corrupt program %d", prog);
        int32_t r = call(s, op, p->code + i + 3, na);
        if (r < 0) return r;
        i += 4 + na;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* backward */

/* The reference's depth-first post-order from root: children in order, each
   node once. Leaves are left out: they have nothing to pass on. Returns its
   length. */
static int32_t topo_sort(mg_store *s, int32_t root) {
    const int32_t (*kid)[2] = (const int32_t (*)[2])s->kid;
    uint8_t *seen = s->seen;
    int32_t *st = s->stack, *topo = s->topo, sp = 0, nt = 0, v = root, j = 0;
    memset(seen, 0, (size_t)s->n);
    seen[root] = 1;
    for (;;) {
        int32_t c = -1;
        while (j < 2 && (c = kid[v][j]) >= 0 && (seen[c] || kid[c][0] < 0)) j++;
        if (j < 2 && c >= 0) { /* descend into the next unvisited child */
            st[sp++] = v; st[sp++] = j + 1;
            seen[c] = 1;
            v = c; j = 0;
            continue;
        }
        topo[nt++] = v;
        if (!sp) return nt;
        j = st[--sp]; v = st[--sp];
    }
}

/* Backward in the reference's order, the reverse of that post-order: the
   order in which a shared child receives its contributions decides the last
   bits of its gradient. */
static int32_t backward_exact(mg_store *s, int32_t root) {
    int64_t c = s->scap;
    if (grow(&s->seen, &c, s->n, sizeof *s->seen, INT32_MAX) ||
        (c = s->scap, grow(&s->topo, &c, s->n, sizeof *s->topo, INT32_MAX)) ||
        (c = s->scap, grow(&s->stack, &c, s->n, 2 * sizeof *s->stack, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate the backward pass's buffers");
    s->scap = c;
    const int32_t *topo = s->topo;
    double *grad = s->grad;
    grad[root] = 1.0;
    for (int32_t i = topo_sort(s, root) - 1; i >= 0; i--) {
        int32_t v = topo[i];
        double g = grad[v];
        for (int32_t j = 0; j < 2 && s->kid[v][j] >= 0; j++) grad[s->kid[v][j]] += s->lg[v][j] * g;
    }
    return 0;
}

/* Fast mode: each op's backward kernel, given its arguments and first output.
   Nodes whose gradient is zero pass nothing on and are skipped. */

/* k nodes with children (scalar ops, elementwise vector ops), last first */
static void back_nodes(mg_store *s, int32_t out, int32_t k) {
    double *grad = s->grad;
    for (int32_t i = out + k - 1; i >= out; i--) {
        double g = grad[i];
        if (g == 0) continue;
        for (int32_t j = 0; j < 2 && s->kid[i][j] >= 0; j++) grad[s->kid[i][j]] += s->lg[i][j] * g;
    }
}

static void back_scalar(mg_store *s, const int32_t *a, int32_t out) { (void)a; back_nodes(s, out, 1); }
static void back_embed(mg_store *s, const int32_t *a, int32_t out) { back_nodes(s, out, a[4]); }
static void back_vadd(mg_store *s, const int32_t *a, int32_t out) { back_nodes(s, out, a[2]); }
static void back_vector(mg_store *s, const int32_t *a, int32_t out) { back_nodes(s, out, a[1]); }

/* out_i = x_i * r, r = (ss / n + 1e-5) ** -0.5:
   dx_j = g_j r - x_j r**3 / n * sum_i g_i x_i */
static void back_rmsnorm(mg_store *s, const int32_t *a, int32_t out) {
    int32_t x = a[0], n = a[1];
    const double *xv = s->val + x, *g = s->grad + out;
    double ss = 0.0, gx = 0.0;
    for (int32_t i = 0; i < n; i++) { ss = ss + xv[i] * xv[i]; gx = gx + g[i] * xv[i]; }
    double r = pow(ss / n + 1e-5, -0.5), k = -gx * r * r * r / n;
    double *dx = s->grad + x;
    for (int32_t i = 0; i < n; i++) dx[i] += g[i] * r + k * xv[i];
}

/* out_o = w_o . x: dw_o += g_o x, dx += g_o w_o */
static void back_linear(mg_store *s, const int32_t *a, int32_t out) {
    int32_t x = a[0], nin = a[1], w = a[2], nout = a[3];
    const double *xv = s->val + x;
    double *dx = s->grad + x;
    for (int32_t o = 0; o < nout; o++) {
        double g = s->grad[out + o];
        if (g == 0) continue;
        const double *wo = s->val + w + (int64_t)o * nin;
        double *dw = s->grad + w + (int64_t)o * nin;
        for (int32_t i = 0; i < nin; i++) {
            dw[i] += g * xv[i];
            dx[i] += g * wo[i];
        }
    }
}

/* p = softmax(x): dx_j += p_j (g_j - sum_i g_i p_i) */
static void back_softmax(mg_store *s, const int32_t *a, int32_t out) {
    int32_t x = a[0], n = a[1];
    const double *p = s->val + out, *g = s->grad + out;
    double gp = 0.0;
    for (int32_t i = 0; i < n; i++) gp += g[i] * p[i];
    for (int32_t i = 0; i < n; i++) s->grad[x + i] += p[i] * (g[i] - gp);
}

/* Per head, with weights w = softmax(c q.k_i): dv_i += w_i g, dw_i = g . v_i
   (kept as the weight nodes' gradients), dlogit_i = w_i (dw_i - w . dw),
   dq += c sum_i dlogit_i k_i, dk_i += c dlogit_i q. */
static void back_attention(mg_store *s, const int32_t *a, int32_t out) {
    int32_t q = a[0], n = a[1], n_head = a[2], t = a[3], hd = n / n_head;
    const int32_t *keys = a + 4, *values = a + 4 + t;
    double c = pow(pow(hd, 0.5), -1), *v = s->val, *grad = s->grad;
    for (int32_t h = 0; h < n_head; h++) {
        int32_t hs = h * hd, wts = out + n + h * t, any = 0;
        const double *g = grad + out + hs;
        for (int32_t j = 0; j < hd; j++) any |= g[j] != 0;
        if (!any) continue;
        double wdw = 0.0;
        for (int32_t i = 0; i < t; i++) {
            double wi = v[wts + i], dw = 0.0;
            for (int32_t j = 0; j < hd; j++) {
                dw += g[j] * v[values[i] + hs + j];
                grad[values[i] + hs + j] += wi * g[j];
            }
            grad[wts + i] += dw;
            wdw += wi * dw;
        }
        for (int32_t i = 0; i < t; i++) {
            double dl = v[wts + i] * (grad[wts + i] - wdw) * c;
            for (int32_t j = 0; j < hd; j++) {
                grad[q + hs + j] += dl * v[keys[i] + hs + j];
                grad[keys[i] + hs + j] += dl * v[q + hs + j];
            }
        }
    }
}

/* loss = -log softmax(x)[target]: dx += g (p - onehot), kept after the loss */
static void back_nll(mg_store *s, const int32_t *a, int32_t out) {
    int32_t x = a[0], n = a[1];
    double g = s->grad[out];
    if (g == 0) return;
    for (int32_t i = 0; i < n; i++) s->grad[x + i] += g * s->val[out + 1 + i];
}

static void back_mean(mg_store *s, const int32_t *a, int32_t out) {
    int32_t n = a[0];
    double g = s->grad[out] * (1.0 / n);
    for (int32_t i = 0; i < n; i++) s->grad[a[1 + i]] += g;
}

typedef void (*back_fn)(mg_store *, const int32_t *, int32_t);
static const back_fn BACK[NOPS] = {
    back_scalar, back_scalar, back_scalar, back_scalar, back_scalar, back_scalar, back_scalar, back_scalar,
    back_embed, back_vadd, back_vector, back_vector, back_rmsnorm, back_linear, back_softmax,
    back_attention, back_nll, back_mean,
};

/* Fast mode: the tape's ops in reverse, each by its kernel: reverse creation
   order, no topological sort. Gradients would double up if run again over
   the same graph, so once per reset. */
static int32_t backward_fast(mg_store *s, int32_t root) {
    if (s->backed) return fail(s, MG_EARG, "fast mode runs backward once per graph: reset first");
    s->backed = 1;
    s->grad[root] = 1.0;
    for (int64_t end = s->ntape; end > 0; ) {
        int32_t na = s->tape[end - 1];
        const int32_t *rec = s->tape + end - 4 - na;
        BACK[rec[0]](s, rec + 3, rec[2]);
        end -= 4 + na;
    }
    return 0;
}

int32_t mg_backward(mg_store *s, int32_t root) {
    if (!s) return MG_EARG;
    CHECK_ID(root);
    return s->mode == MG_FAST ? backward_fast(s, root) : backward_exact(s, root);
}

int32_t mg_vpow(mg_store *s, double *out, const double *x, int64_t n, double p) {
    if (!s) return MG_EARG;
    CHECK(out && x && n >= 0, "bad array for pow");
    for (int64_t i = 0; i < n; i++) out[i] = pow(x[i], p);
    return 0;
}
