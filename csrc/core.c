/* core.c: the engine alone: the node store, the reference's Value ops (each
   beside its local gradients), the vector ops that build the reference's
   nodes (docs/graph.md), and its topological sort and backward. Built without
   fast-math or FP contraction, with the C library's pow/exp/log as Python's,
   every value and gradient is the pure-Python engine's, bit for bit. What
   makes it fast lives in other files, proven equal to this (docs/exact.md). */
#include <stdarg.h>
#include "core.h"

/* ------------------------------------------------------------------------ */
/* the store: nodes on consecutive ids, the parameters first */

int32_t fail(mg_store *s, int32_t code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->v.err, sizeof s->v.err, fmt, ap);
    va_end(ap);
    return code;
}
/* Grow *p, *cap elements of size sz, to hold `want` (at most max). */
int grow(void *p, int64_t *cap, int64_t want, size_t sz, int64_t max) {
    if (want <= *cap || want > max) return want <= *cap ? 0 : -1;
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
int32_t reserve(mg_store *s, int64_t nodes, int64_t tmp) {
    int64_t want = s->v.n + nodes, c = s->cap;
    if (grow(&s->v.val, &c, want, sizeof *s->v.val, INT32_MAX) ||
        (c = s->cap, grow(&s->v.grad, &c, want, sizeof *s->v.grad, INT32_MAX)) ||
        (c = s->cap, grow(&s->child, &c, want, sizeof *s->child, INT32_MAX)) ||
        (c = s->cap, grow(&s->local_grad, &c, want, sizeof *s->local_grad, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate %lld more nodes", (long long)nodes);
    s->cap = c;
    if (grow(&s->tmp, &s->tmpcap, tmp, sizeof *s->tmp, INT32_MAX))
        return fail(s, MG_ENOMEM, "cannot allocate scratch space");
    return 0;
}

mg_store *store_new(int32_t mode) {
    mg_store *s = mode == MG_EXACT || mode == MG_FAST ? calloc(1, sizeof *s) : NULL;
    if (s) s->mode = mode;
    return s;
}

void store_free(mg_store *s) {
    free(s->v.val); free(s->v.grad); free(s->child); free(s->local_grad);
    free(s->tok); free(s->tmp); free(s->seen); free(s->stack); free(s->topo);
    free(s);
}
mg_view *store_view(mg_store *s) { return &s->v; }

/* Append n parameter leaves with values v; they survive every reset. */
int32_t store_params(mg_store *s, const double *v, int32_t n) {
    if (s->v.n != s->v.nparams) return fail(s, MG_EARG, "parameters must be created before any other node");
    if (n < 1 || !v) return fail(s, MG_EARG, "bad parameter count %d", n);
    for (int32_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return fail(s, MG_EMATH, "parameter %d is %g, not finite", i, v[i]);
    RESERVE(n, 0);
    int32_t first = s->v.n;
    for (int32_t i = 0; i < n; i++) leaf(s, v[i]);
    s->v.nparams = s->v.n;
    return first;
}
/* Drop every node but the parameters. */
void store_reset(mg_store *s) { s->v.n = s->v.nparams; }

/* The tokens that embed and nll read by index. */
int32_t store_tokens(mg_store *s, const int32_t *tok, int32_t n) {
    if (n < 0 || (n && !tok)) return fail(s, MG_EARG, "bad token count %d", n);
    if (grow(&s->tok, &s->tokcap, n, sizeof *s->tok, INT32_MAX)) return fail(s, MG_ENOMEM, "cannot allocate tokens");
    if (n) memcpy(s->tok, tok, (size_t)n * sizeof *tok);
    s->ntok = n;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* the reference's Value: each op's value beside its local gradients. `at` is
   NEW or an id the vector op reserved for it. */

static inline int32_t add(mg_store *s, int32_t at, int32_t a, int32_t b) {
    return node(s, at, s->v.val[a] + s->v.val[b], a, 1.0, b, 1.0);
}
static inline int32_t mul(mg_store *s, int32_t at, int32_t a, int32_t b) {
    double x = s->v.val[a], y = s->v.val[b];
    return node(s, at, x * y, a, y, b, x);
}
static int32_t power(mg_store *s, int32_t at, int32_t a, double p) {
    double x = s->v.val[a];
    return node(s, at, pow(x, p), a, p * pow(x, p - 1), -1, 0);
}
static int32_t log_(mg_store *s, int32_t a) {
    double x = s->v.val[a];
    return node(s, NEW, log(x), a, 1 / x, -1, 0);
}
static int32_t exp_(mg_store *s, int32_t a) {
    double e = exp(s->v.val[a]); /* the value is its own local gradient */
    return node(s, NEW, e, a, e, -1, 0);
}
static int32_t relu(mg_store *s, int32_t a) {
    double x = s->v.val[a];
    return node(s, NEW, x > 0 ? x : 0.0, a, x > 0 ? 1.0 : 0.0, -1, 0);
}
static int32_t tanh_(mg_store *s, int32_t a) {
    double t = tanh(s->v.val[a]);
    return node(s, NEW, t, a, 1 - pow(t, 2), -1, 0);
}
/* Python's sum(x): x[0] + 0 (a leaf), then + x[1], ... left to right. n+1 nodes. */
static int32_t sum(mg_store *s, int32_t at, const int32_t *x, int32_t n) {
    double v = s->v.val[x[0]] + 0.0; /* the running value stays in a register */
    int32_t acc = node(s, n == 1 ? at : NEW, v, x[0], 1.0, leaf(s, 0.0), 1.0);
    for (int32_t i = 1; i < n; i++) {
        v = v + s->v.val[x[i]];
        acc = node(s, i == n - 1 ? at : NEW, v, acc, 1.0, x[i], 1.0);
    }
    return acc;
}
/* softmax of the n nodes x[] into y[] (at + i if at >= 0): exp(x - max), each
   divided by their sum as e * total**-1. 6n+1 nodes. */
static void softmax(mg_store *s, int32_t *y, const int32_t *x, int32_t n, int32_t at) {
    double mx = s->v.val[x[0]];
    for (int32_t i = 1; i < n; i++) if (s->v.val[x[i]] > mx) mx = s->v.val[x[i]];
    for (int32_t i = 0; i < n; i++) y[i] = exp_(s, add(s, NEW, x[i], leaf(s, -mx)));
    int32_t total = sum(s, NEW, y, n);
    /* each e / total makes its own total**-1 node, as in the reference; pow
       is a function, so its two pows are taken once */
    double t = s->v.val[total], inv = pow(t, -1), dinv = -1.0 * pow(t, -2.0);
    for (int32_t i = 0; i < n; i++)
        y[i] = mul(s, at < 0 ? NEW : at + i, y[i], node(s, NEW, inv, total, dinv, -1, 0));
}

/* ------------------------------------------------------------------------ */
/* scalar ops, checked: what the reference's Value methods make */

int32_t op_leaf(mg_store *s, double v) { RESERVE(1, 0); return leaf(s, v); }
int32_t op_add(mg_store *s, int32_t a, int32_t b) { CHECK_ID(a); CHECK_ID(b); RESERVE(1, 0); return add(s, NEW, a, b); }
int32_t op_mul(mg_store *s, int32_t a, int32_t b) { CHECK_ID(a); CHECK_ID(b); RESERVE(1, 0); return mul(s, NEW, a, b); }
int32_t op_exp(mg_store *s, int32_t a) { CHECK_ID(a); RESERVE(1, 0); return exp_(s, a); }
int32_t op_relu(mg_store *s, int32_t a) { CHECK_ID(a); RESERVE(1, 0); return relu(s, a); }
int32_t op_tanh(mg_store *s, int32_t a) { CHECK_ID(a); RESERVE(1, 0); return tanh_(s, a); }

int32_t op_log(mg_store *s, int32_t a) {
    CHECK_ID(a);
    if (!(s->v.val[a] > 0)) return fail(s, MG_EMATH, "log(%g): not positive", s->v.val[a]);
    RESERVE(1, 0);
    return log_(s, a);
}
int32_t op_pow(mg_store *s, int32_t a, double p) {
    CHECK_ID(a);
    double x = s->v.val[a];
    if (x < 0 && p != floor(p)) return fail(s, MG_EMATH, "%g ** %g: a negative base needs a whole exponent", x, p);
    if (x == 0 && p < 0) return fail(s, MG_EMATH, "0 ** %g: zero to a negative power", p);
    RESERVE(1, 0);
    return power(s, NEW, a, p);
}

/* ------------------------------------------------------------------------ */
/* vector ops: each builds, in one call, the nodes the reference's list
   comprehensions build, its outputs on consecutive ids. A vector is n
   consecutive ids from x; a matrix nout x nin consecutive ids, row-major. */

/* [a + b for a, b in zip(x, y)] */
int32_t op_vadd(mg_store *s, int32_t a, int32_t b, int32_t n) {
    CHECK_VEC(a, n); CHECK_VEC(b, n);
    RESERVE(n, 0);
    int32_t out = s->v.n;
    for (int32_t i = 0; i < n; i++) add(s, NEW, a + i, b + i);
    return out;
}
/* [t + p for t, p in zip(wte[tok], wpe[pos])]: tok indexes the tokens */
int32_t op_embed(mg_store *s, int32_t wte, int32_t ntok, int32_t wpe, int32_t npos, int32_t n, int32_t tok,
                 int32_t pos) {
    CHECK_VEC(wte, (int64_t)ntok * n); CHECK_VEC(wpe, (int64_t)npos * n);
    CHECK(tok >= 0 && tok < s->ntok, "token index %d is not in [0, %d)", tok, s->ntok);
    int32_t t = s->tok[tok];
    CHECK(t >= 0 && t < ntok, "token %d is not in [0, %d)", t, ntok);
    CHECK(pos >= 0 && pos < npos, "position %d is not in [0, %d)", pos, npos);
    return op_vadd(s, wte + t * n, wpe + pos * n, n);
}
/* [xi.relu() for xi in x] */
int32_t op_vrelu(mg_store *s, int32_t x, int32_t n) {
    CHECK_VEC(x, n);
    RESERVE(n, 0);
    int32_t out = s->v.n;
    for (int32_t i = 0; i < n; i++) relu(s, x + i);
    return out;
}
/* [xi * c for xi in x]: a leaf c and a mul per element, the muls first */
int32_t op_scale(mg_store *s, int32_t x, int32_t n, double c) {
    CHECK_VEC(x, n);
    RESERVE(2 * (int64_t)n, 0);
    int32_t out = s->v.n;
    s->v.n += n;
    for (int32_t i = 0; i < n; i++) mul(s, out + i, x + i, leaf(s, c));
    return out;
}
/* ms = sum(xi * xi) / n; scale = (ms + 1e-5) ** -0.5; [xi * scale] */
int32_t op_rmsnorm(mg_store *s, int32_t x, int32_t n) {
    CHECK_VEC(x, n);
    RESERVE(3 * (int64_t)n + 6, n);
    for (int32_t i = 0; i < n; i++) s->tmp[i] = mul(s, NEW, x + i, x + i);
    /* "/ len(x)" is "* len(x)**-1", a float pow in Python */
    int32_t ms = mul(s, NEW, sum(s, NEW, s->tmp, n), leaf(s, pow(n, -1)));
    int32_t scale = power(s, NEW, add(s, NEW, ms, leaf(s, 1e-5)), -0.5);
    int32_t out = s->v.n;
    for (int32_t i = 0; i < n; i++) mul(s, NEW, x + i, scale);
    return out;
}
static int32_t linear_check(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout) {
    CHECK_VEC(x, nin);
    CHECK(nout >= 1, "linear needs at least one output row, got %d", nout);
    CHECK_VEC(w, (int64_t)nin * nout);
    return 0;
}
/* [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]: the nout outputs, then
   per row its nin products and its sum (row o's at out + nout + 2 nin o) */
int32_t op_linear(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout) {
    int32_t r = linear_check(s, x, nin, w, nout);
    if (r) return r;
    RESERVE(2 * (int64_t)nin * nout + nout, nin);
    int32_t out = s->v.n;
    s->v.n += nout;
    for (int32_t o = 0; o < nout; o++) {
        for (int32_t i = 0; i < nin; i++) s->tmp[i] = mul(s, NEW, w + o * nin + i, x + i);
        sum(s, out + o, s->tmp, nin);
    }
    return out;
}
int32_t op_softmax(mg_store *s, int32_t x, int32_t n) {
    CHECK_VEC(x, n);
    RESERVE(6 * (int64_t)n + 1, 2 * (int64_t)n);
    int32_t out = s->v.n;
    s->v.n += n;
    for (int32_t i = 0; i < n; i++) s->tmp[n + i] = x + i;
    softmax(s, s->tmp, s->tmp + n, n, out);
    return out;
}

static int32_t attention_check(mg_store *s, int32_t q, int32_t n, int32_t n_head, const int32_t *keys,
                        const int32_t *values, int32_t t) {
    CHECK(t >= 1 && keys && values, "attention over %d positions", t);
    CHECK(n_head >= 1 && n >= 1 && n % n_head == 0, "n_embd %d is not a multiple of n_head %d", n, n_head);
    CHECK_VEC(q, n);
    for (int32_t i = 0; i < t; i++) { CHECK_VEC(keys[i], n); CHECK_VEC(values[i], n); }
    return 0;
}
/* "/ head_dim**0.5" is "* (head_dim**0.5)**-1" */
static double attention_scale(int32_t head_dim) { return pow(pow(head_dim, 0.5), -1); }

/* Causal self-attention of q (n_head heads) over t cached keys and values: per
   head softmax(q_h . k_h[t] / head_dim**0.5) weighs the v_h[t]; heads joined. */
int32_t op_attention(mg_store *s, int32_t q, int32_t n, int32_t n_head, const int32_t *keys,
                     const int32_t *values, int32_t t) {
    int32_t r = attention_check(s, q, n, n_head, keys, values, t);
    if (r) return r;
    int32_t hd = n / n_head;
    double c = attention_scale(hd);
    RESERVE(n_head * (t * (2 * (int64_t)hd + 3) + 6 * (int64_t)t + 1) + n * (2 * (int64_t)t + 1),
            (hd > t ? hd : t) + 2 * (int64_t)t);
    int32_t out = s->v.n;
    s->v.n += n;
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
static int32_t nll_check(mg_store *s, int32_t x, int32_t n, int32_t target) {
    CHECK_VEC(x, n);
    CHECK(target >= 0 && target < s->ntok, "token index %d is not in [0, %d)", target, s->ntok);
    int32_t t = s->tok[target];
    CHECK(t >= 0 && t < n, "target %d is not in [0, %d)", t, n);
    return 0;
}

/* -softmax(logits)[target].log(), i.e. log(p) * -1; target indexes the tokens */
int32_t op_nll(mg_store *s, int32_t x, int32_t n, int32_t target) {
    int32_t r = nll_check(s, x, n, target);
    if (r) return r;
    RESERVE(6 * (int64_t)n + 4, 2 * (int64_t)n);
    for (int32_t i = 0; i < n; i++) s->tmp[n + i] = x + i;
    softmax(s, s->tmp, s->tmp + n, n, NEW);
    return mul(s, NEW, log_(s, s->tmp[s->tok[target]]), leaf(s, -1));
}
/* (1 / n) * sum(x): the mean of n scalar nodes */
int32_t op_mean(mg_store *s, const int32_t *x, int32_t n) {
    CHECK(n >= 1 && x, "mean of %d nodes", n);
    for (int32_t i = 0; i < n; i++) CHECK_ID(x[i]);
    RESERVE((int64_t)n + 3, 0);
    return mul(s, NEW, sum(s, NEW, x, n), leaf(s, 1.0 / n));
}

/* ------------------------------------------------------------------------ */
/* backward */

static int32_t sort_buffers(mg_store *s) {
    int64_t c = s->scap;
    if (grow(&s->seen, &c, s->v.n, sizeof *s->seen, INT32_MAX) ||
        (c = s->scap, grow(&s->topo, &c, s->v.n, sizeof *s->topo, INT32_MAX)) ||
        (c = s->scap, grow(&s->stack, &c, s->v.n, 2 * sizeof *s->stack, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate the backward pass's buffers");
    s->scap = c;
    return 0;
}
/* The reference's depth-first post-order from root: children in order, each
   node once. Leaves are left out: they have nothing to pass on. Returns its
   length. */
static int32_t topo_sort(mg_store *s, int32_t root) {
    const int32_t (*child)[2] = (const int32_t (*)[2])s->child;
    uint8_t *seen = s->seen;
    int32_t *st = s->stack, *topo = s->topo, sp = 0, nt = 0, v = root, j = 0;
    memset(seen, 0, (size_t)s->v.n);
    seen[root] = 1;
    for (;;) {
        int32_t c = -1;
        while (j < 2 && (c = child[v][j]) >= 0 && (seen[c] || child[c][0] < 0)) j++;
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
/* Backward in the reference's order, the reverse of that post-order (after
   sort_buffers): the order of a shared child's contributions decides its bits. */
static void backward_full(mg_store *s, int32_t root) {
    s->v.grad[root] = 1.0;
    for (int32_t i = topo_sort(s, root) - 1; i >= 0; i--) node_back(s, s->topo[i]);
}
/* Gradient 1 at root, accumulated into every node below it. */
int32_t op_backward(mg_store *s, int32_t root) {
    CHECK_ID(root);
    int32_t r = sort_buffers(s);
    if (r) return r;
    backward_full(s, root);
    return 0;
}
