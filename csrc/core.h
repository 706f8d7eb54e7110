/* core.h: the core's store and functions (core.c), private to csrc/ (Python
   sees microgpt.h); the machinery (machinery.h) uses them, unknown to them. */
#ifndef MG_CORE_H
#define MG_CORE_H
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "microgpt.h"

struct mg_store {
    mg_view v;               /* values, gradients, counts, error: what Python reads */
    int32_t (*child)[2];       /* node i: children, -1 where there is none */
    double (*local_grad)[2];         /* node i: local gradients d(node)/d(child) */
    int64_t cap;             /* nodes allocated */
    int32_t mode;            /* MG_EXACT or MG_FAST */
    int32_t nonfinite;       /* the op being run made a non-finite number */
    int32_t *tok, ntok;      /* tokens that embed/nll read by index */
    int32_t *tmp;            /* scratch ids for one op */
    uint8_t *seen;           /* backward: visited flags */
    int32_t *stack, *topo;   /* backward: DFS stack of (node, next child); order */
    int64_t tokcap, tmpcap, scap;
    struct machinery *m;     /* what the machinery keeps (machinery.h); the core never looks */
};

#define NEW (-1) /* node(): a new node, not a reserved id */
#define CHECK(cond, ...) do { if (!(cond)) return fail(s, MG_EARG, __VA_ARGS__); } while (0)
#define CHECK_ID(a) CHECK((a) >= 0 && (a) < s->v.n, "node id %d is not in [0, %d)", (int)(a), (int)s->v.n)
#define CHECK_VEC(x, len) CHECK((len) >= 1 && (x) >= 0 && (int64_t)(x) + (len) <= s->v.n, \
    "vector [%d, %d+%lld) is not within the %d nodes", (int)(x), (int)(x), (long long)(len), (int)s->v.n)
#define RESERVE(nodes, tmp) do { int32_t r_ = reserve(s, nodes, tmp); if (r_) return r_; } while (0)

int32_t fail(mg_store *s, int32_t code, const char *fmt, ...);
int grow(void *p, int64_t *cap, int64_t want, size_t sz, int64_t max);
int32_t reserve(mg_store *s, int64_t nodes, int64_t tmp);

/* A node with value v, children a, b (-1: none), local gradients ga, gb: a new
   one, or the id `at` the op reserved (a sanitizer build checks it did). */
static inline int32_t node(mg_store *s, int32_t at, double v, int32_t a, double ga, int32_t b, double gb) {
    int32_t i = at >= 0 ? at : s->v.n++;
#if defined(__SANITIZE_ADDRESS__) || defined(MG_CHECK_NODES)
    if (i < 0 || i >= s->cap) {
        fprintf(stderr, "microgpt: node %d written beyond the %lld reserved\n", i, (long long)s->cap);
        abort();
    }
#endif
    s->nonfinite |= !isfinite(v) | !isfinite(ga) | !isfinite(gb);
    s->v.val[i] = v;
    s->v.grad[i] = 0.0;
    s->child[i][0] = a; s->child[i][1] = b;
    s->local_grad[i][0] = ga; s->local_grad[i][1] = gb;
    return i;
}
static inline int32_t leaf(mg_store *s, double v) { return node(s, NEW, v, -1, 0, -1, 0); }

mg_store *store_new(int32_t mode);
void store_free(mg_store *s);
mg_view *store_view(mg_store *s);
int32_t store_params(mg_store *s, const double *v, int32_t n);
void store_reset(mg_store *s);
int32_t store_tokens(mg_store *s, const int32_t *tok, int32_t n);
/* the reference's ops: each returns its first output's id or an MG_E* code */
int32_t op_leaf(mg_store *s, double v);
int32_t op_add(mg_store *s, int32_t a, int32_t b);
int32_t op_mul(mg_store *s, int32_t a, int32_t b);
int32_t op_pow(mg_store *s, int32_t a, double p);
/* the one-input ops, op_<name>(s, a): the list is the Value API's too (value.c
   makes mg_value_<name> of each), so a new one is a word here and its function */
#define UNARY_OPS(X) X(log) X(exp) X(relu) X(tanh)
#define DECLARE(name) int32_t op_##name(mg_store *s, int32_t a);
UNARY_OPS(DECLARE)
#undef DECLARE
int32_t op_vadd(mg_store *s, int32_t a, int32_t b, int32_t n);
int32_t op_embed(mg_store *s, int32_t wte, int32_t ntok, int32_t wpe, int32_t npos, int32_t n, int32_t tok, int32_t pos);
int32_t op_vrelu(mg_store *s, int32_t x, int32_t n);
int32_t op_scale(mg_store *s, int32_t x, int32_t n, double c);
int32_t op_rmsnorm(mg_store *s, int32_t x, int32_t n);
int32_t op_linear(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout);
int32_t op_softmax(mg_store *s, int32_t x, int32_t n);
int32_t op_attention(mg_store *s, int32_t q, int32_t n, int32_t n_head, const int32_t *keys, const int32_t *values,
                     int32_t t);
int32_t op_nll(mg_store *s, int32_t x, int32_t n, int32_t target);
int32_t op_mean(mg_store *s, const int32_t *x, int32_t n);
int32_t op_backward(mg_store *s, int32_t root);
/* Pass node v's gradient to its children. */
static inline void node_back(mg_store *s, int32_t v) {
    double g = s->v.grad[v];
    for (int32_t j = 0; j < 2 && s->child[v][j] >= 0; j++) s->v.grad[s->child[v][j]] += s->local_grad[v][j] * g;
}

#endif
