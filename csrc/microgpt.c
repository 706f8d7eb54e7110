/* microgpt.c: the node store, forward ops and backward pass of microgpt_c.

   Exact mode builds the reference's scalar graph node for node (docs/graph.md
   defines every op's nodes): the same children in the same order, the same
   local gradients, from the same IEEE double operations and the C library's
   pow/exp/log. Built without fast-math or FP contraction, so every value and
   gradient is bit-identical to the pure-Python engine.

   Every op is one row of OP_LIST below and one section of this file: its
   argument struct, its exact forward, its fast forward and its fast backward,
   side by side, then its mg_X entry point. Every op call goes through call(),
   which can record it: a recorded sequence (a program: one document's forward
   pass) is replayed by one mg_replay call, which is what takes the per-op
   Python overhead out of training. On the graphs of model.doc_loss, exact
   mode's backward reuses the reference's order, cached by position, runs
   linear rows as kernels, and its replay leaves out the rows' insides: section
   "doc_loss graphs" says why none of that changes a bit. */
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "microgpt.h"

/* The ops, one row each: name, argument count (FIXED(its struct), or
   VARIABLE(a checker)), exact forward, fast forward (NULL: the exact one),
   fast backward. The enum and the table are made from this one list, so a
   row whose function is missing does not compile. */
#define OP_LIST(X)                                                                           \
    X(leaf,      FIXED(leaf_args),         leaf_exact,      NULL,            back_none)      \
    X(add,       FIXED(binary_args),       add_exact,       NULL,            back_one)       \
    X(mul,       FIXED(binary_args),       mul_exact,       NULL,            back_one)       \
    X(pow,       FIXED(pow_args),          pow_exact,       NULL,            back_one)       \
    X(log,       FIXED(unary_args),        log_exact,       NULL,            back_one)       \
    X(exp,       FIXED(unary_args),        exp_exact,       NULL,            back_one)       \
    X(relu,      FIXED(unary_args),        relu_exact,      NULL,            back_one)       \
    X(tanh,      FIXED(unary_args),        tanh_exact,      NULL,            back_one)       \
    X(embed,     FIXED(embed_args),        embed_exact,     NULL,            embed_back)     \
    X(vadd,      FIXED(vadd_args),         vadd_exact,      NULL,            vadd_back)      \
    X(vrelu,     FIXED(vec_args),          vrelu_exact,     NULL,            vec_back)       \
    X(scale,     FIXED(scale_args),        scale_exact,     NULL,            scale_back)     \
    X(rmsnorm,   FIXED(vec_args),          rmsnorm_exact,   rmsnorm_fast,    rmsnorm_back)   \
    X(linear,    FIXED(linear_args),       linear_exact,    linear_fast,     linear_back)    \
    X(softmax,   FIXED(vec_args),          softmax_exact,   softmax_fast,    softmax_back)   \
    X(attention, VARIABLE(attention_nargs), attention_exact, attention_fast, attention_back) \
    X(nll,       FIXED(nll_args),          nll_exact,       nll_fast,        nll_back)       \
    X(mean,      VARIABLE(mean_nargs),     mean_exact,      mean_fast,       mean_back)

#define ENUM_ROW(name, ...) OP_##name,
enum { OP_LIST(ENUM_ROW) NOPS };

#define NEW (-1) /* make a new node (rather than fill a reserved id) */

/* ------------------------------------------------------------------------ */
/* node store */

struct mg_store {
    mg_view v;               /* values, gradients, counts, error: what Python reads */
    int32_t (*kid)[2];       /* node i: children, -1 where there is none */
    double (*lg)[2];         /* node i: local gradients d(node)/d(child) */
    int64_t cap;             /* nodes allocated */
    int32_t mode;            /* MG_EXACT or MG_FAST */
    int32_t backed;          /* fast mode, doc graphs: backward has run since the reset */
    int32_t nonfinite;       /* the op being run made a non-finite number */
    int32_t *tape;           /* op calls since reset: (op, nargs, out, args..., nargs) */
    int64_t ntape, tcap;
    int64_t rec_tape;        /* recording: where its calls start on the tape */
    int32_t rec_n, recording;
    struct prog { int32_t *code; int64_t len; int32_t start; struct doc *doc; } *progs; /* recorded programs */
    int32_t nprog;
    int64_t pcap;
    int32_t cur;             /* the program whose run is the graph since the reset, or -1 */
    int32_t lean;            /* the graph since the reset has linear rows without insides */
    int32_t leaning;         /* the op being replayed leaves them out */
    int32_t check;           /* doc backward: also run the full sort and compare every gradient */
    struct piece *pieces;    /* doc backward: the cached pieces of the order, chained by position */
    int64_t npieces, piececap;
    int64_t *head;           /* head[p]: the last cached piece of position p, or -1 */
    int64_t nhead;
    int32_t *code;           /* the pieces' backward code */
    int64_t ncode, codecap;
    int64_t *plan;           /* the current doc graph's piece for each position, or -1 */
    int32_t *plan_target;    /* and its target token there */
    int64_t plancap;
    int32_t *tok;            /* tokens that embed/nll read by index */
    int32_t ntok;
    int64_t tokcap;
    int32_t *tmp;            /* scratch ids for one op */
    int64_t tmpcap;
    uint8_t *seen;           /* backward: visited flags */
    double *g0, *gref;       /* checking: the gradients before, and by the full sort */
    int64_t gcap;
    int32_t *stack, *topo;   /* backward: DFS stack of (node, next child); order */
    int64_t scap;
    int32_t handed;          /* a Value API handle was made in this generation */
    pthread_mutex_t lock;    /* held by the thread inside: Value API calls wait, others are refused */
    mg_store *prev, *next;   /* every live store, for fork */
};

/* A program recorded by doc_loss (see "doc_loss graphs" below) */
struct lin { int32_t out, x, nin, w, nout; }; /* a linear call of a doc program */
struct doc {
    int32_t npos, root;
    int32_t *first, *loss;  /* per position: its first node's id, l_p's id */
    int32_t *target;        /* per position: its target's token index */
    uint64_t *hash;         /* per position: hash of the calls up to its nll */
    struct lin *lin;        /* the linear calls, by output id */
    int32_t nlin;
};
struct piece { int32_t pos, target; uint64_t hash; int64_t next, at, len; }; /* code[at, at+len) */
static void doc_free(struct doc *d);
static int32_t plan(mg_store *s, const struct doc *d);
static int32_t new_generation(mg_store *s);
static void track(mg_store *s, int on);

static int32_t fail(mg_store *s, int32_t code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->v.err, sizeof s->v.err, fmt, ap);
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
    int64_t want = s->v.n + nodes, c = s->cap;
    if (grow(&s->v.val, &c, want, sizeof *s->v.val, INT32_MAX) ||
        (c = s->cap, grow(&s->v.grad, &c, want, sizeof *s->v.grad, INT32_MAX)) ||
        (c = s->cap, grow(&s->kid, &c, want, sizeof *s->kid, INT32_MAX)) ||
        (c = s->cap, grow(&s->lg, &c, want, sizeof *s->lg, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate %lld more nodes", (long long)nodes);
    s->cap = c;
    if (grow(&s->tmp, &s->tmpcap, tmp, sizeof *s->tmp, INT32_MAX))
        return fail(s, MG_ENOMEM, "cannot allocate scratch space");
    return 0;
}

/* A node with value v and children a, b (-1: none), local gradients ga, gb:
   a new one, or the reserved id `at`. Capacity was reserved by the op; a
   sanitizer build checks that it was. */
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
    s->kid[i][0] = a; s->kid[i][1] = b;
    s->lg[i][0] = ga; s->lg[i][1] = gb;
    return i;
}

static inline int32_t leaf(mg_store *s, double v) { return node(s, NEW, v, -1, 0, -1, 0); }

/* Fast mode: k fused nodes on consecutive ids, values to be filled by the op,
   no children (their op's backward kernel knows what they depend on). */
static int32_t fresh(mg_store *s, int32_t k) {
    int32_t first = s->v.n;
    for (int32_t i = 0; i < k; i++) leaf(s, 0.0);
    return first;
}

/* One thread at a time per store. The Value API's calls wait for the lock
   (they take turns, LOCK below); every other entry point is refused with
   MG_EBUSY while another thread is inside: a store's graph is one thread's
   work in progress. */
static int32_t enter(mg_store *s) {
    if (!s) return MG_EARG;
    return pthread_mutex_trylock(&s->lock) ? MG_EBUSY : 0;
}

static int32_t leave(mg_store *s, int32_t r) {
    pthread_mutex_unlock(&s->lock);
    return r;
}

/* fork: the child has only the forking thread, so a store's lock that
   another thread held would stay held there forever. fork therefore waits
   until no thread is inside any store (taking every lock), and the parent
   and the child both release them. */
static pthread_mutex_t stores_lock = PTHREAD_MUTEX_INITIALIZER;
static mg_store *stores; /* every live store */

static void lock_all(void) {
    pthread_mutex_lock(&stores_lock);
    for (mg_store *s = stores; s; s = s->next) pthread_mutex_lock(&s->lock);
}

static void unlock_all(void) {
    for (mg_store *s = stores; s; s = s->next) pthread_mutex_unlock(&s->lock);
    pthread_mutex_unlock(&stores_lock);
}

static void at_fork(void) { pthread_atfork(lock_all, unlock_all, unlock_all); }

static void track(mg_store *s, int on) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, at_fork);
    pthread_mutex_lock(&stores_lock);
    if (on) {
        s->next = stores;
        if (stores) stores->prev = s;
        stores = s;
    } else {
        if (s->prev) s->prev->next = s->next; else stores = s->next;
        if (s->next) s->next->prev = s->prev;
    }
    pthread_mutex_unlock(&stores_lock);
}

mg_store *mg_new(int32_t mode) {
    if (mode != MG_EXACT && mode != MG_FAST) return NULL;
    mg_store *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    if (pthread_mutex_init(&s->lock, NULL)) { free(s); return NULL; }
    s->mode = mode;
    s->cur = -1;
    s->v.generation = 1;
    track(s, 1);
    return s;
}

void mg_free(mg_store *s) {
    if (!s) return;
    track(s, 0);
    for (int32_t i = 0; i < s->nprog; i++) {
        free(s->progs[i].code);
        doc_free(s->progs[i].doc);
    }
    free(s->progs);
    free(s->pieces); free(s->head); free(s->code); free(s->plan); free(s->plan_target);
    free(s->v.val); free(s->v.grad); free(s->kid); free(s->lg);
    free(s->tape); free(s->tok); free(s->tmp); free(s->seen); free(s->stack); free(s->topo);
    free(s->g0); free(s->gref);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

mg_view *mg_view_of(mg_store *s) { return s ? &s->v : NULL; }

/* Append n parameter leaves with values v; they survive every reset. */
static int32_t params(mg_store *s, const double *v, int32_t n) {
    if (s->v.n != s->v.nparams || s->recording) return fail(s, MG_EARG, "parameters must be created before any other node");
    if (n < 1 || !v) return fail(s, MG_EARG, "bad parameter count %d", n);
    for (int32_t i = 0; i < n; i++)
        if (!isfinite(v[i])) return fail(s, MG_EMATH, "parameter %d is %g, not finite", i, v[i]);
    int32_t r = reserve(s, n, 0);
    if (r) return r;
    int32_t first = s->v.n;
    for (int32_t i = 0; i < n; i++) leaf(s, v[i]);
    s->v.nparams = s->v.n;
    return first;
}
int32_t mg_params(mg_store *s, const double *v, int32_t n) { int32_t r = enter(s); return r ? r : leave(s, params(s, v, n)); }

/* Drop every node but the parameters. */
static int32_t reset(mg_store *s) {
    int32_t r = new_generation(s); /* every Value API handle made before is now stale */
    if (r) return r;
    s->v.n = s->v.nparams;
    s->ntape = 0;
    s->recording = 0;
    s->backed = 0;
    s->cur = -1;
    s->lean = 0;
    return 0;
}
int32_t mg_reset(mg_store *s) { int32_t r = enter(s); return r ? r : leave(s, reset(s)); }

/* The tokens that embed and nll read: a replayed program reads new ones. */
static int32_t tokens(mg_store *s, const int32_t *tok, int32_t n) {
    if (n < 0 || (n && !tok)) return fail(s, MG_EARG, "bad token count %d", n);
    if (grow(&s->tok, &s->tokcap, n, sizeof *s->tok, INT32_MAX)) return fail(s, MG_ENOMEM, "cannot allocate tokens");
    if (n) memcpy(s->tok, tok, (size_t)n * sizeof *tok);
    s->ntok = n;
    return 0;
}
int32_t mg_tokens(mg_store *s, const int32_t *tok, int32_t n) { int32_t r = enter(s); return r ? r : leave(s, tokens(s, tok, n)); }

#define CHECK(cond, ...) do { if (!(cond)) return fail(s, MG_EARG, __VA_ARGS__); } while (0)
#define CHECK_ID(a) CHECK((a) >= 0 && (a) < s->v.n, "node id %d is not in [0, %d)", (int)(a), (int)s->v.n)
#define CHECK_VEC(x, len) CHECK((len) >= 1 && (x) >= 0 && (int64_t)(x) + (len) <= s->v.n, \
    "vector [%d, %d+%lld) is not within the %d nodes", (int)(x), (int)(x), (long long)(len), (int)s->v.n)
#define RESERVE(nodes, tmp) do { int32_t r_ = reserve(s, nodes, tmp); if (r_) return r_; } while (0)

/* The one entry to every op (below the table): runs op on its na argument
   words, recording it when asked. */
static int32_t call(mg_store *s, int32_t op, const void *args, int32_t na);

/* Arguments are int32 words, as on the tape; a double is two of them. */
typedef struct { int32_t w[2]; } f64;
static inline double dbl(f64 x) { double d; memcpy(&d, &x, sizeof d); return d; }
static inline f64 f64_of(double d) { f64 x; memcpy(&x, &d, sizeof x); return x; }
#define WORDS(args) ((int32_t)(sizeof(args) / sizeof(int32_t)))
#define CALL(op, args) entry_call(s, OP_##op, &(args), WORDS(args))
static int32_t entry_call(mg_store *s, int32_t op, const void *args, int32_t na) {
    int32_t r = enter(s);
    return r ? r : leave(s, call(s, op, args, na));
}

/* ------------------------------------------------------------------------ */
/* the reference's scalar graph: its Value methods and the helpers the vector
   ops share. `at` is NEW or a reserved id. */

static inline int32_t add(mg_store *s, int32_t at, int32_t a, int32_t b) {
    return node(s, at, s->v.val[a] + s->v.val[b], a, 1.0, b, 1.0);
}

static inline int32_t mul(mg_store *s, int32_t at, int32_t a, int32_t b) {
    double x = s->v.val[a], y = s->v.val[b];
    return node(s, at, x * y, a, y, b, x);
}

static int32_t powc(mg_store *s, int32_t at, int32_t a, double p) {
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

/* Python's sum(x): x[0] + 0 (a leaf), then + x[1], ... left to right.
   n+1 nodes. */
static int32_t sum(mg_store *s, int32_t at, const int32_t *x, int32_t n) {
    double v = s->v.val[x[0]] + 0.0; /* the running value stays in a register */
    int32_t acc = node(s, n == 1 ? at : NEW, v, x[0], 1.0, leaf(s, 0.0), 1.0);
    for (int32_t i = 1; i < n; i++) {
        v = v + s->v.val[x[i]];
        acc = node(s, i == n - 1 ? at : NEW, v, acc, 1.0, x[i], 1.0);
    }
    return acc;
}

/* softmax of the n nodes x[] into y[] (at[i] if at >= 0): exp(x - max), each
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

/* The values softmax() gives, for fast mode: y may be x. */
static void softmax_vals(double *y, const double *x, int32_t n) {
    double mx = x[0], total = 0.0;
    for (int32_t i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    for (int32_t i = 0; i < n; i++) total = total + (y[i] = exp(x[i] + -mx));
    double inv = pow(total, -1);
    for (int32_t i = 0; i < n; i++) y[i] = y[i] * inv;
}

/* ------------------------------------------------------------------------ */
/* Fast mode's backward, for ops whose nodes have children: k nodes, last
   first. Nodes whose gradient is zero pass nothing on and are skipped. */

static void back_nodes(mg_store *s, int32_t out, int32_t k) {
    double *grad = s->v.grad;
    for (int32_t i = out + k - 1; i >= out; i--) {
        double g = grad[i];
        if (g == 0) continue;
        for (int32_t j = 0; j < 2 && s->kid[i][j] >= 0; j++) grad[s->kid[i][j]] += s->lg[i][j] * g;
    }
}

static void back_none(mg_store *s, const void *args, int32_t out) { (void)s; (void)args; (void)out; }
static void back_one(mg_store *s, const void *args, int32_t out) { (void)args; back_nodes(s, out, 1); }

/* ------------------------------------------------------------------------ */
/* scalar ops: the reference's Value methods, one node each */

typedef struct { f64 v; } leaf_args;
static int32_t leaf_exact(mg_store *s, const void *args) {
    const leaf_args *a = args;
    RESERVE(1, 0);
    return leaf(s, dbl(a->v)); /* a non-finite value is caught by call() */
}
int32_t mg_leaf(mg_store *s, double v) { leaf_args a = {f64_of(v)}; return CALL(leaf, a); }

typedef struct { int32_t a, b; } binary_args;
#define BINARY_OP(name, make)                                                      \
    static int32_t name##_exact(mg_store *s, const void *args) {                   \
        const binary_args *a = args;                                                \
        CHECK_ID(a->a); CHECK_ID(a->b);                                             \
        RESERVE(1, 0);                                                              \
        return make(s, NEW, a->a, a->b);                                            \
    }                                                                               \
    int32_t mg_##name(mg_store *s, int32_t x, int32_t y) { binary_args a = {x, y}; return CALL(name, a); }
BINARY_OP(add, add)
BINARY_OP(mul, mul)

typedef struct { int32_t a; } unary_args;
#define UNARY_OP(name, make)                                                       \
    static int32_t name##_exact(mg_store *s, const void *args) {                   \
        const unary_args *a = args;                                                 \
        CHECK_ID(a->a);                                                             \
        RESERVE(1, 0);                                                              \
        return make(s, a->a);                                                       \
    }                                                                               \
    int32_t mg_##name(mg_store *s, int32_t x) { unary_args a = {x}; return CALL(name, a); }
UNARY_OP(exp, exp_)
UNARY_OP(relu, relu)
UNARY_OP(tanh, tanh_)

static int32_t log_exact(mg_store *s, const void *args) {
    const unary_args *a = args;
    CHECK_ID(a->a);
    if (!(s->v.val[a->a] > 0)) return fail(s, MG_EMATH, "log(%g): not positive", s->v.val[a->a]);
    RESERVE(1, 0);
    return log_(s, a->a);
}
int32_t mg_log(mg_store *s, int32_t x) { unary_args a = {x}; return CALL(log, a); }

typedef struct { int32_t a; f64 p; } pow_args;
static int32_t pow_exact(mg_store *s, const void *args) {
    const pow_args *a = args;
    CHECK_ID(a->a);
    double x = s->v.val[a->a], p = dbl(a->p);
    if (x < 0 && p != floor(p)) return fail(s, MG_EMATH, "%g ** %g: a negative base needs a whole exponent", x, p);
    if (x == 0 && p < 0) return fail(s, MG_EMATH, "0 ** %g: zero to a negative power", p);
    RESERVE(1, 0);
    return powc(s, NEW, a->a, p);
}
int32_t mg_pow(mg_store *s, int32_t x, double p) { pow_args a = {x, f64_of(p)}; return CALL(pow, a); }

/* ------------------------------------------------------------------------ */
/* vector ops: each builds, in one call, the nodes the reference's list
   comprehensions build, with its outputs on consecutive ids. */

/* [a + b for a, b in zip(x, y)] */
typedef struct { int32_t a, b, n; } vadd_args;
static int32_t vadd_exact(mg_store *s, const void *args) {
    const vadd_args *a = args;
    CHECK_VEC(a->a, a->n); CHECK_VEC(a->b, a->n);
    RESERVE(a->n, 0);
    int32_t out = s->v.n;
    for (int32_t i = 0; i < a->n; i++) add(s, NEW, a->a + i, a->b + i);
    return out;
}
static void vadd_back(mg_store *s, const void *args, int32_t out) { back_nodes(s, out, ((const vadd_args *)args)->n); }
int32_t mg_vadd(mg_store *s, int32_t x, int32_t y, int32_t n) { vadd_args a = {x, y, n}; return CALL(vadd, a); }

/* [t + p for t, p in zip(wte[tok], wpe[pos])]: wte has ntok rows of n, wpe
   npos rows; tok is an index into the tokens */
typedef struct { int32_t wte, ntok, wpe, npos, n, tok, pos; } embed_args;
static int32_t embed_exact(mg_store *s, const void *args) {
    const embed_args *a = args;
    int32_t n = a->n;
    CHECK_VEC(a->wte, (int64_t)a->ntok * n); CHECK_VEC(a->wpe, (int64_t)a->npos * n);
    CHECK(a->tok >= 0 && a->tok < s->ntok, "token index %d is not in [0, %d)", a->tok, s->ntok);
    int32_t tok = s->tok[a->tok];
    CHECK(tok >= 0 && tok < a->ntok, "token %d is not in [0, %d)", tok, a->ntok);
    CHECK(a->pos >= 0 && a->pos < a->npos, "position %d is not in [0, %d)", a->pos, a->npos);
    vadd_args b = {a->wte + tok * n, a->wpe + a->pos * n, n};
    return vadd_exact(s, &b);
}
static void embed_back(mg_store *s, const void *args, int32_t out) { back_nodes(s, out, ((const embed_args *)args)->n); }
int32_t mg_embed(mg_store *s, int32_t wte, int32_t ntok, int32_t wpe, int32_t npos, int32_t n,
                 int32_t tok, int32_t pos) {
    embed_args a = {wte, ntok, wpe, npos, n, tok, pos};
    return CALL(embed, a);
}

/* (x, n): vrelu, rmsnorm, softmax */
typedef struct { int32_t x, n; } vec_args;
static void vec_back(mg_store *s, const void *args, int32_t out) { back_nodes(s, out, ((const vec_args *)args)->n); }

/* [xi.relu() for xi in x] */
static int32_t vrelu_exact(mg_store *s, const void *args) {
    const vec_args *a = args;
    CHECK_VEC(a->x, a->n);
    RESERVE(a->n, 0);
    int32_t out = s->v.n;
    for (int32_t i = 0; i < a->n; i++) relu(s, a->x + i);
    return out;
}
int32_t mg_vrelu(mg_store *s, int32_t x, int32_t n) { vec_args a = {x, n}; return CALL(vrelu, a); }

/* [xi * c for xi in x]: a leaf c and a mul per element, the muls first */
typedef struct { int32_t x, n; f64 c; } scale_args;
static int32_t scale_exact(mg_store *s, const void *args) {
    const scale_args *a = args;
    CHECK_VEC(a->x, a->n);
    RESERVE(2 * (int64_t)a->n, 0);
    int32_t out = s->v.n;
    s->v.n += a->n;
    for (int32_t i = 0; i < a->n; i++) mul(s, out + i, a->x + i, leaf(s, dbl(a->c)));
    return out;
}
static void scale_back(mg_store *s, const void *args, int32_t out) { back_nodes(s, out, ((const scale_args *)args)->n); }
int32_t mg_scale(mg_store *s, int32_t x, int32_t n, double c) { scale_args a = {x, n, f64_of(c)}; return CALL(scale, a); }

/* ms = sum(xi * xi) / n; scale = (ms + 1e-5) ** -0.5; [xi * scale].
   Fast: one fused node per output. */
static int32_t rmsnorm_exact(mg_store *s, const void *args) {
    const vec_args *a = args;
    int32_t x = a->x, n = a->n;
    CHECK_VEC(x, n);
    RESERVE(3 * (int64_t)n + 6, n);
    for (int32_t i = 0; i < n; i++) s->tmp[i] = mul(s, NEW, x + i, x + i);
    /* "/ len(x)" is "* len(x)**-1", a float pow in Python */
    int32_t ms = mul(s, NEW, sum(s, NEW, s->tmp, n), leaf(s, pow(n, -1)));
    int32_t scale = powc(s, NEW, add(s, NEW, ms, leaf(s, 1e-5)), -0.5);
    int32_t out = s->v.n;
    for (int32_t i = 0; i < n; i++) mul(s, NEW, x + i, scale);
    return out;
}
static int32_t rmsnorm_fast(mg_store *s, const void *args) {
    const vec_args *a = args;
    int32_t x = a->x, n = a->n;
    CHECK_VEC(x, n);
    RESERVE(n, 0);
    const double *xv = s->v.val + x;
    double ss = 0.0;
    for (int32_t i = 0; i < n; i++) ss = ss + xv[i] * xv[i];
    double scale = pow(ss * pow(n, -1) + 1e-5, -0.5);
    int32_t out = fresh(s, n);
    for (int32_t i = 0; i < n; i++) s->v.val[out + i] = s->v.val[x + i] * scale;
    return out;
}
/* out_i = x_i * r, r = (ss / n + 1e-5) ** -0.5:
   dx_j = g_j r - x_j r**3 / n * sum_i g_i x_i */
static void rmsnorm_back(mg_store *s, const void *args, int32_t out) {
    const vec_args *a = args;
    int32_t x = a->x, n = a->n;
    const double *xv = s->v.val + x, *g = s->v.grad + out;
    double ss = 0.0, gx = 0.0;
    for (int32_t i = 0; i < n; i++) { ss = ss + xv[i] * xv[i]; gx = gx + g[i] * xv[i]; }
    double r = pow(ss / n + 1e-5, -0.5), k = -gx * r * r * r / n;
    double *dx = s->v.grad + x;
    for (int32_t i = 0; i < n; i++) dx[i] += g[i] * r + k * xv[i];
}
int32_t mg_rmsnorm(mg_store *s, int32_t x, int32_t n) { vec_args a = {x, n}; return CALL(rmsnorm, a); }

/* [sum(wi * xi for wi, xi in zip(wo, x)) for wo in w]: x has nin nodes, w is
   nout x nin. Exact: the outputs, then per row its nin products and its sum.
   Fast: each output one n-ary dot-product node. */
typedef struct { int32_t x, nin, w, nout; } linear_args;
static int32_t linear_check(mg_store *s, const linear_args *a) {
    CHECK_VEC(a->x, a->nin);
    CHECK(a->nout >= 1, "linear needs at least one output row, got %d", a->nout);
    CHECK_VEC(a->w, (int64_t)a->nin * a->nout);
    return 0;
}
static int32_t linear_lean(mg_store *s, const linear_args *a);
static int32_t linear_exact(mg_store *s, const void *args) {
    const linear_args *a = args;
    int32_t r = linear_check(s, a), x = a->x, nin = a->nin, w = a->w, nout = a->nout;
    if (r) return r;
    if (s->leaning) return linear_lean(s, a);
    RESERVE(2 * (int64_t)nin * nout + nout, nin);
    int32_t out = s->v.n;
    s->v.n += nout;
    for (int32_t o = 0; o < nout; o++) {
        for (int32_t i = 0; i < nin; i++) s->tmp[i] = mul(s, NEW, w + o * nin + i, x + i);
        sum(s, out + o, s->tmp, nin);
    }
    return out;
}
/* y[o] = 0 + w_o[0] x[0] + w_o[1] x[1] + ..., left to right: the bits of the
   exact row's sum (m_0 + 0 is 0 + m_0). Four rows at a time: four independent
   sums in flight, each summed in that order. */
static void dot_rows(double *y, const double *x, const double *w, int32_t nin, int32_t nout) {
    int32_t o = 0;
    for (; o + 4 <= nout; o += 4, w += 4 * (int64_t)nin) {
        double a0 = 0.0, a1 = 0.0, a2 = 0.0, a3 = 0.0;
        for (int32_t i = 0; i < nin; i++) {
            a0 = a0 + w[i] * x[i];
            a1 = a1 + w[nin + i] * x[i];
            a2 = a2 + w[2 * nin + i] * x[i];
            a3 = a3 + w[3 * nin + i] * x[i];
        }
        y[o] = a0; y[o + 1] = a1; y[o + 2] = a2; y[o + 3] = a3;
    }
    for (; o < nout; o++, w += nin) {
        double acc = 0.0;
        for (int32_t i = 0; i < nin; i++) acc = acc + w[i] * x[i];
        y[o] = acc;
    }
}
/* Exact mode, lean (a doc graph whose backward runs by cached pieces): the
   same node ids, but only the outputs are written, with the exact row's
   values; the insides are needed by nothing but the sort, which this graph
   does not run. Finiteness is checked on the outputs only: a non-finite
   product or partial sum cannot come back to a finite number along the sum
   (inf + finite is inf, inf - inf and NaN + anything are NaN), and the
   products' local gradients are the operands, already finite. */
static int32_t linear_lean(mg_store *s, const linear_args *a) {
    int32_t nin = a->nin, nout = a->nout, out = s->v.n;
    RESERVE(2 * (int64_t)nin * nout + nout, 0);
    double *y = s->v.val + out;
    dot_rows(y, s->v.val + a->x, s->v.val + a->w, nin, nout);
    for (int32_t o = 0; o < nout; o++)
        if (!isfinite(y[o])) return fail(s, MG_EMATH, "linear made a non-finite number (row %d: %g)", o, y[o]);
    for (int32_t o = 0; o < nout; o++) node(s, out + o, y[o], -1, 0, -1, 0);
    s->v.n += 2 * nin * nout + nout;
    return out;
}
static int32_t linear_fast(mg_store *s, const void *args) {
    const linear_args *a = args;
    int32_t r = linear_check(s, a);
    if (r) return r;
    RESERVE(a->nout, 0);
    int32_t out = fresh(s, a->nout);
    dot_rows(s->v.val + out, s->v.val + a->x, s->v.val + a->w, a->nin, a->nout);
    return out;
}
/* out_o = w_o . x: dw_o += g_o x, dx += g_o w_o */
static void linear_back(mg_store *s, const void *args, int32_t out) {
    const linear_args *a = args;
    int32_t nin = a->nin;
    const double *xv = s->v.val + a->x;
    double *dx = s->v.grad + a->x;
    for (int32_t o = 0; o < a->nout; o++) {
        double g = s->v.grad[out + o];
        if (g == 0) continue;
        const double *wo = s->v.val + a->w + (int64_t)o * nin;
        double *dw = s->v.grad + a->w + (int64_t)o * nin;
        for (int32_t i = 0; i < nin; i++) {
            dw[i] += g * xv[i];
            dx[i] += g * wo[i];
        }
    }
}
int32_t mg_linear(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout) {
    linear_args a = {x, nin, w, nout};
    return CALL(linear, a);
}

/* Exact: the reference's softmax of x. Fast: fused nodes. */
static int32_t softmax_exact(mg_store *s, const void *args) {
    const vec_args *a = args;
    int32_t n = a->n;
    CHECK_VEC(a->x, n);
    RESERVE(6 * (int64_t)n + 1, 2 * (int64_t)n);
    int32_t out = s->v.n;
    s->v.n += n;
    for (int32_t i = 0; i < n; i++) s->tmp[n + i] = a->x + i;
    softmax(s, s->tmp, s->tmp + n, n, out);
    return out;
}
static int32_t softmax_fast(mg_store *s, const void *args) {
    const vec_args *a = args;
    CHECK_VEC(a->x, a->n);
    RESERVE(a->n, 0);
    int32_t out = fresh(s, a->n);
    softmax_vals(s->v.val + out, s->v.val + a->x, a->n);
    return out;
}
/* p = softmax(x): dx_j += p_j (g_j - sum_i g_i p_i) */
static void softmax_back(mg_store *s, const void *args, int32_t out) {
    const vec_args *a = args;
    int32_t n = a->n;
    const double *p = s->v.val + out, *g = s->v.grad + out;
    double gp = 0.0;
    for (int32_t i = 0; i < n; i++) gp += g[i] * p[i];
    for (int32_t i = 0; i < n; i++) s->v.grad[a->x + i] += p[i] * (g[i] - gp);
}
int32_t mg_softmax(mg_store *s, int32_t x, int32_t n) { vec_args a = {x, n}; return CALL(softmax, a); }

/* Causal self-attention of query q (n = n_head * head_dim nodes) over t cached
   keys and values (vectors of n nodes; kv holds the t key ids, then the t
   value ids). Per head: logits[t] = dot(q_h, k_h[t]) / head_dim**0.5, weights
   = softmax(logits), out[j] = sum_t weights[t] * v_h[t][j]; heads
   concatenated. Fast: the n outputs, then each head's t attention weights as
   fused nodes. */
typedef struct { int32_t q, n, n_head, t; int32_t kv[]; } attention_args;
static int attention_nargs(const int32_t *w, int32_t na) {
    const attention_args *a = (const attention_args *)w;
    return na >= WORDS(attention_args) && a->t >= 1 && na == WORDS(attention_args) + 2 * (int64_t)a->t;
}
static int32_t attention_check(mg_store *s, const attention_args *a) {
    CHECK(a->n_head >= 1 && a->n >= 1 && a->n % a->n_head == 0, "n_embd %d is not a multiple of n_head %d",
          a->n, a->n_head);
    CHECK_VEC(a->q, a->n);
    for (int32_t i = 0; i < 2 * a->t; i++) CHECK_VEC(a->kv[i], a->n);
    return 0;
}
/* "/ head_dim**0.5" is "* (head_dim**0.5)**-1" */
static double attention_c(int32_t hd) { return pow(pow(hd, 0.5), -1); }
static int32_t attention_exact(mg_store *s, const void *args) {
    const attention_args *a = args;
    int32_t r = attention_check(s, a);
    if (r) return r;
    int32_t q = a->q, n = a->n, n_head = a->n_head, t = a->t, hd = n / n_head;
    const int32_t *keys = a->kv, *values = a->kv + t;
    double c = attention_c(hd);
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
static int32_t attention_fast(mg_store *s, const void *args) {
    const attention_args *a = args;
    int32_t r = attention_check(s, a);
    if (r) return r;
    int32_t q = a->q, n = a->n, n_head = a->n_head, t = a->t, hd = n / n_head;
    const int32_t *keys = a->kv, *values = a->kv + t;
    double c = attention_c(hd);
    RESERVE(n + (int64_t)n_head * t, 0);
    int32_t out = fresh(s, n), wts = fresh(s, n_head * t);
    double *v = s->v.val;
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
/* Per head, with weights w = softmax(c q.k_i): dv_i += w_i g, dw_i = g . v_i
   (kept as the weight nodes' gradients), dlogit_i = w_i (dw_i - w . dw),
   dq += c sum_i dlogit_i k_i, dk_i += c dlogit_i q. */
static void attention_back(mg_store *s, const void *args, int32_t out) {
    const attention_args *a = args;
    int32_t q = a->q, n = a->n, n_head = a->n_head, t = a->t, hd = n / n_head;
    const int32_t *keys = a->kv, *values = a->kv + t;
    double c = attention_c(hd), *v = s->v.val, *grad = s->v.grad;
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
int32_t mg_attention(mg_store *s, int32_t q, int32_t n, int32_t n_head,
                     const int32_t *keys, const int32_t *values, int32_t t) {
    if (!s) return MG_EARG;
    if (t < 1 || t > (INT32_MAX - 4) / 2 || !keys || !values) return fail(s, MG_EARG, "attention over %d positions", t);
    attention_args *a = malloc(sizeof *a + 2 * (size_t)t * sizeof *a->kv);
    if (!a) return fail(s, MG_ENOMEM, "cannot allocate attention arguments");
    *a = (attention_args){q, n, n_head, t};
    memcpy(a->kv, keys, (size_t)t * sizeof *keys);
    memcpy(a->kv + t, values, (size_t)t * sizeof *values);
    int32_t r = entry_call(s, OP_attention, a, WORDS(attention_args) + 2 * t);
    free(a);
    return r;
}

/* -softmax(logits)[target].log(), i.e. log(p) * -1; target is an index into
   the tokens. Fast: one fused softmax + cross-entropy node, followed by n
   nodes holding its local gradients toward the logits, p - onehot(target). */
typedef struct { int32_t x, n, target; } nll_args;
static int32_t nll_check(mg_store *s, const nll_args *a) {
    CHECK_VEC(a->x, a->n);
    CHECK(a->target >= 0 && a->target < s->ntok, "token index %d is not in [0, %d)", a->target, s->ntok);
    int32_t target = s->tok[a->target];
    CHECK(target >= 0 && target < a->n, "target %d is not in [0, %d)", target, a->n);
    return 0;
}
static int32_t nll_exact(mg_store *s, const void *args) {
    const nll_args *a = args;
    int32_t r = nll_check(s, a), n = a->n;
    if (r) return r;
    RESERVE(6 * (int64_t)n + 4, 2 * (int64_t)n);
    for (int32_t i = 0; i < n; i++) s->tmp[n + i] = a->x + i;
    softmax(s, s->tmp, s->tmp + n, n, NEW);
    return mul(s, NEW, log_(s, s->tmp[s->tok[a->target]]), leaf(s, -1));
}
static int32_t nll_fast(mg_store *s, const void *args) {
    const nll_args *a = args;
    int32_t r = nll_check(s, a);
    if (r) return r;
    int32_t n = a->n, target = s->tok[a->target];
    RESERVE(1 + (int64_t)n, 0);
    int32_t out = fresh(s, 1 + n);
    double *p = s->v.val + out + 1;
    softmax_vals(p, s->v.val + a->x, n);
    s->v.val[out] = log(p[target]) * -1;
    p[target] -= 1.0;
    return out;
}
/* loss = -log softmax(x)[target]: dx += g (p - onehot), kept after the loss */
static void nll_back(mg_store *s, const void *args, int32_t out) {
    const nll_args *a = args;
    double g = s->v.grad[out];
    if (g == 0) return;
    for (int32_t i = 0; i < a->n; i++) s->v.grad[a->x + i] += g * s->v.val[out + 1 + i];
}
int32_t mg_nll(mg_store *s, int32_t x, int32_t n, int32_t target) { nll_args a = {x, n, target}; return CALL(nll, a); }

/* (1 / n) * sum(x): the mean of n scalar nodes. Fast: one node. */
typedef struct { int32_t n; int32_t x[]; } mean_args;
static int mean_nargs(const int32_t *w, int32_t na) {
    const mean_args *a = (const mean_args *)w;
    return na >= WORDS(mean_args) && a->n >= 1 && na == WORDS(mean_args) + (int64_t)a->n;
}
static int32_t mean_exact(mg_store *s, const void *args) {
    const mean_args *a = args;
    for (int32_t i = 0; i < a->n; i++) CHECK_ID(a->x[i]);
    RESERVE((int64_t)a->n + 3, 0);
    return mul(s, NEW, sum(s, NEW, a->x, a->n), leaf(s, 1.0 / a->n));
}
static int32_t mean_fast(mg_store *s, const void *args) {
    const mean_args *a = args;
    for (int32_t i = 0; i < a->n; i++) CHECK_ID(a->x[i]);
    RESERVE(1, 0);
    double acc = 0.0;
    for (int32_t i = 0; i < a->n; i++) acc = acc + s->v.val[a->x[i]];
    int32_t out = fresh(s, 1);
    s->v.val[out] = acc * (1.0 / a->n);
    return out;
}
static void mean_back(mg_store *s, const void *args, int32_t out) {
    const mean_args *a = args;
    double g = s->v.grad[out] * (1.0 / a->n);
    for (int32_t i = 0; i < a->n; i++) s->v.grad[a->x[i]] += g;
}
int32_t mg_mean(mg_store *s, const int32_t *x, int32_t n) {
    if (!s) return MG_EARG;
    if (n < 1 || n > INT32_MAX - 1 || !x) return fail(s, MG_EARG, "mean of %d nodes", n);
    mean_args *a = malloc(sizeof *a + (size_t)n * sizeof *a->x);
    if (!a) return fail(s, MG_ENOMEM, "cannot allocate mean arguments");
    a->n = n;
    memcpy(a->x, x, (size_t)n * sizeof *x);
    int32_t r = entry_call(s, OP_mean, a, WORDS(mean_args) + n);
    free(a);
    return r;
}

/* ------------------------------------------------------------------------ */
/* the op table and the one entry to every op */

typedef int32_t (*forward_fn)(mg_store *, const void *args);
typedef void (*backward_fn)(mg_store *, const void *args, int32_t out);
static const struct op {
    const char *name;
    int32_t nargs;                            /* argument words, if fixed */
    int (*nargs_ok)(const int32_t *, int32_t); /* else: are these words one call's arguments? */
    forward_fn exact, fast;
    backward_fn back;
} OPS[NOPS] = {
#define FIXED(args) WORDS(args), NULL
#define VARIABLE(check) 0, check
#define TABLE_ROW(name, nargs, exact, fast, back) {#name, nargs, exact, fast, back},
    OP_LIST(TABLE_ROW)
};

/* Run op with its na argument words a. In fast mode (for backward) and while
   recording (for replay), also append (op, na, output, a..., na) to the tape:
   the trailing na lets backward walk it from the end. An op whose nodes hold
   a non-finite value or local gradient (overflow, say) is undone: an error. */
static int32_t call(mg_store *s, int32_t op, const void *args, int32_t na) {
    if (!s) return MG_EARG;
    const struct op *o = &OPS[op];
    if (o->nargs_ok ? !o->nargs_ok(args, na) : na != o->nargs)
        return fail(s, MG_EARG, "%s given %d argument words", o->name, na);
    int64_t at = s->ntape;
    int32_t n0 = s->v.n;
    int taping = s->recording || s->mode == MG_FAST;
    if (taping) {
        if (grow(&s->tape, &s->tcap, at + 4 + (int64_t)na, sizeof *s->tape, INT64_MAX / 8))
            return fail(s, MG_ENOMEM, "cannot allocate the tape");
        s->tape[at] = op; s->tape[at + 1] = na;
        memcpy(s->tape + at + 3, args, (size_t)na * sizeof *s->tape);
        s->tape[at + 3 + na] = na;
    }
    s->nonfinite = 0;
    int32_t r = (s->mode == MG_FAST && o->fast ? o->fast : o->exact)(s, args);
    if (r < 0) return r;
    if (s->mode == MG_FAST) /* fused nodes get their values after node() made them */
        for (int32_t i = n0; i < s->v.n; i++) s->nonfinite |= !isfinite(s->v.val[i]);
    if (s->nonfinite) { /* undo the op; name the first bad node */
        int32_t i = n0;
        while (i < s->v.n - 1 && isfinite(s->v.val[i]) && isfinite(s->lg[i][0]) && isfinite(s->lg[i][1])) i++;
        fail(s, MG_EMATH, "%s made a non-finite number (node %d: value %g, local gradients %g, %g)",
             o->name, i, s->v.val[i], s->lg[i][0], s->lg[i][1]);
        s->v.n = n0;
        return MG_EMATH;
    }
    if (taping) {
        s->tape[at + 2] = r;
        s->ntape = at + 4 + na;
    }
    return r;
}

/* ------------------------------------------------------------------------ */
/* recording and replay */

static int32_t record_begin(mg_store *s) {
    if (s->recording) return fail(s, MG_EARG, "already recording");
    s->recording = 1;
    s->rec_tape = s->ntape;
    s->rec_n = s->v.n;
    return 0;
}
int32_t mg_record_begin(mg_store *s) { int32_t r = enter(s); return r ? r : leave(s, record_begin(s)); }

/* Save the calls since mg_record_begin as a program; returns its index. */
static int32_t record_end(mg_store *s) {
    if (!s->recording) return fail(s, MG_EARG, "not recording");
    s->recording = 0;
    int64_t len = s->ntape - s->rec_tape, c = s->pcap;
    if (s->mode == MG_EXACT) s->ntape = s->rec_tape; /* the tape was only for this */
    if (grow(&s->progs, &c, s->nprog + 1, sizeof *s->progs, INT32_MAX)) return fail(s, MG_ENOMEM, "cannot allocate a program");
    s->pcap = c;
    int32_t *code = malloc((size_t)(len ? len : 1) * sizeof *code);
    if (!code) return fail(s, MG_ENOMEM, "cannot allocate a program");
    if (len) memcpy(code, s->tape + s->rec_tape, (size_t)len * sizeof *code);
    s->progs[s->nprog] = (struct prog){code, len, s->rec_n, NULL};
    s->cur = s->nprog;
    return s->nprog++;
}
int32_t mg_record_end(mg_store *s) { int32_t r = enter(s); return r ? r : leave(s, record_end(s)); }

/* Run a recorded program again: from the same node count, every call makes the
   same node ids, reading the current tokens and parameter values. */
static int32_t replay(mg_store *s, int32_t prog) {
    if (prog < 0 || prog >= s->nprog) return fail(s, MG_EARG, "no program %d", prog);
    struct prog *p = &s->progs[prog];
    if (s->v.n != p->start) return fail(s, MG_EARG, "program %d starts at node %d, the store is at %d", prog, p->start, s->v.n);
    s->cur = -1;
    const struct doc *d = p->doc;
    int32_t r = d ? plan(s, d) : 0, pos = 0;
    if (r < 0) return r;
    for (int64_t i = 0; i < p->len; ) {
        int32_t op = p->code[i], na = p->code[i + 1];
        if (op < 0 || op >= NOPS || na < 0 || i + 4 + na > p->len || p->code[i + 3 + na] != na)
            return fail(s, MG_EARG, "corrupt program %d", prog);
        /* a doc position whose piece is cached: lean */
        s->leaning = d && pos < d->npos && s->plan[pos] >= 0 && !s->check;
        s->lean |= s->leaning;
        r = call(s, op, p->code + i + 3, na);
        s->leaning = 0;
        if (r < 0) return r;
        pos += op == OP_nll;
        i += 4 + na;
    }
    s->cur = prog;
    return 0;
}
int32_t mg_replay(mg_store *s, int32_t prog) { int32_t r = enter(s); return r ? r : leave(s, replay(s, prog)); }

/* ------------------------------------------------------------------------ */
/* backward */

/* Pass node v's gradient to its children. */
static inline void node_back(mg_store *s, int32_t v) {
    double g = s->v.grad[v];
    for (int32_t j = 0; j < 2 && s->kid[v][j] >= 0; j++) s->v.grad[s->kid[v][j]] += s->lg[v][j] * g;
}

/* The reference's depth-first post-order from root: children in order, each
   node once, the nodes below id lo taken as visited already. Leaves are left
   out: they have nothing to pass on. Returns its length, or -1 if it reaches
   a node at hi or beyond. */
static int32_t topo_sort(mg_store *s, int32_t root, int32_t lo, int32_t hi) {
    const int32_t (*kid)[2] = (const int32_t (*)[2])s->kid;
    uint8_t *seen = s->seen;
    int32_t *st = s->stack, *topo = s->topo, sp = 0, nt = 0, v = root, j = 0;
    memset(seen + lo, 0, (size_t)(s->v.n - lo));
    seen[root] = 1;
    for (;;) {
        int32_t c = -1;
        while (j < 2 && (c = kid[v][j]) >= 0 && c < hi && (c < lo || seen[c] || kid[c][0] < 0)) j++;
        if (j < 2 && c >= hi) return -1;
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


/* ------------------------------------------------------------------------ */
/* doc_loss graphs: the reference's order, cached by position

   A program that Python declares (mg_doc_program) to be model.doc_loss's
   forward over n positions has this shape (docs/graph.md): position p's calls
   end with an nll, whose output l_p is that position's loss, and the last call
   is the mean of l_0..l_{n-1}: S_0 = l_0 + 0, S_p = S_{p-1} + l_p, then
   loss = S_{n-1} * (1/n). The reference's depth-first post-order from the
   loss is then

       piece_0, S_0, piece_1, S_1, ..., piece_{n-1}, S_{n-1}, loss

   where piece_p is the post-order of the nodes first reached from l_p. Why
   piece_p is fixed by the calls up to position p's nll and the target at p:
   - The sort from l_p reaches position p's own nodes and, through attention,
     the keys and values of earlier positions and what those depend on: nodes
     already reached from some l_j, j < p, whatever the targets were (a target
     only picks which of position j's softmax outputs its log reads, a node no
     later position reads). So the set already visited is the same.
   - Replayed from the same start, the same calls make the same node ids with
     the same children, except for what the tokens choose: the embedding rows
     (parameters, leaves, which the sort leaves out) and the softmax output
     that nll's log reads (the target at p, part of the key).
   So a piece is the same in every graph whose calls agree up to position p's
   nll (a hash of them, checked on use) and whose target at p is the same.
   And it can be sorted alone: the nodes it reaches that are older than
   position p's first node are exactly those the full sort has visited before
   l_p (earlier positions' nodes, per the first point; no earlier loss reaches
   position p's nodes, as attention looks only back), so a sort from l_p that
   takes every node below that id as visited makes piece_p. A position whose
   piece is cached is replayed lean (linear_lean): only the pieces need the
   insides of its linear rows. Other graphs (the Value API, a program not
   declared as doc_loss's) always take the full sort. The checking mode
   (mg_check) builds every node, runs both and compares every gradient. */


static void doc_free(struct doc *d) {
    if (!d) return;
    free(d->first); free(d->loss); free(d->target); free(d->hash); free(d->lin);
    free(d);
}

static uint64_t fnv(uint64_t h, const int32_t *w, int64_t n) {
    for (int64_t i = 0; i < n; i++) h = (h ^ (uint32_t)w[i]) * 1099511628211u;
    return h;
}

/* Declare program prog to be doc_loss's forward; checks its shape. */
static int32_t doc_program(mg_store *s, int32_t prog) {
    if (prog < 0 || prog >= s->nprog) return fail(s, MG_EARG, "no program %d", prog);
    struct prog *p = &s->progs[prog];
    if (s->mode != MG_EXACT || p->doc) return 0; /* fast mode has no sort to spare */
    struct doc *d = calloc(1, sizeof *d);
    int64_t calls = 1; /* at least one, for malloc */
    for (int64_t i = 0; i < p->len; i += 4 + p->code[i + 1]) calls++;
    if (!d || !(d->first = malloc(calls * sizeof *d->first)) || !(d->loss = malloc(calls * sizeof *d->loss)) ||
        !(d->target = malloc(calls * sizeof *d->target)) ||
        !(d->hash = malloc(calls * sizeof *d->hash)) || !(d->lin = malloc(calls * sizeof *d->lin))) {
        doc_free(d);
        return fail(s, MG_ENOMEM, "cannot allocate a program's shape");
    }
    uint64_t h = fnv(14695981039346656037u, &p->start, 1);
    const mean_args *mean = NULL;
    int disjoint = 1; /* every linear's input is apart from its weights */
    for (int64_t i = 0; i < p->len; i += 4 + p->code[i + 1]) {
        const int32_t *c = p->code + i;
        h = fnv(h, c, 4 + c[1]);
        if (mean) mean = NULL; /* the mean must be the last call */
        if (c[0] == OP_nll) {
            const nll_args *a = (const nll_args *)(c + 3);
            d->first[d->npos] = d->npos ? d->loss[d->npos - 1] + 1 : p->start; /* nll's output is its last node */
            d->loss[d->npos] = c[2]; d->target[d->npos] = a->target; d->hash[d->npos++] = h;
        } else if (c[0] == OP_linear) {
            const linear_args *a = (const linear_args *)(c + 3);
            d->lin[d->nlin++] = (struct lin){c[2], a->x, a->nin, a->w, a->nout};
            disjoint &= a->x >= a->w + (int64_t)a->nin * a->nout || a->w >= a->x + a->nin;
        } else if (c[0] == OP_mean) {
            mean = (const mean_args *)(c + 3);
            d->root = c[2];
        }
    }
    int ok = p->start == s->v.nparams && disjoint && mean && mean->n == d->npos;
    for (int32_t j = 0; ok && j < d->npos; j++) ok = mean->x[j] == d->loss[j];
    if (!ok) {
        doc_free(d);
        return fail(s, MG_EARG, "program %d is not doc_loss's: it must start after the parameters, end with "
                                "the mean of its nll losses, and keep each linear's input apart from its weights", prog);
    }
    p->doc = d;
    return s->cur == prog && plan(s, d) < 0 ? MG_ENOMEM : 0;
}
int32_t mg_doc_program(mg_store *s, int32_t prog) { int32_t r = enter(s); return r ? r : leave(s, doc_program(s, prog)); }

/* Turn the checking mode on or off. */
int32_t mg_check(mg_store *s, int32_t on) {
    int32_t r = enter(s);
    if (r) return r;
    s->check = on != 0;
    return leave(s, 0);
}

static int64_t find_piece(const mg_store *s, int32_t pos, int32_t target, uint64_t hash) {
    for (int64_t k = pos < s->nhead ? s->head[pos] : -1; k >= 0; k = s->pieces[k].next)
        if (s->pieces[k].target == target && s->pieces[k].hash == hash) return k;
    return -1;
}

/* For the doc graph about to be built, the cached piece of each position;
   returns whether all are. */
static int32_t plan(mg_store *s, const struct doc *d) {
    int64_t c = s->plancap;
    if (grow(&s->plan, &c, d->npos, sizeof *s->plan, INT32_MAX) ||
        (c = s->plancap, grow(&s->plan_target, &c, d->npos, sizeof *s->plan_target, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate a plan");
    s->plancap = c;
    int32_t all = 1;
    for (int32_t p = 0; p < d->npos; p++) {
        int32_t ti = d->target[p];
        s->plan_target[p] = ti >= 0 && ti < s->ntok ? s->tok[ti] : -1; /* the tokens may change before backward */
        s->plan[p] = find_piece(s, p, s->plan_target[p], d->hash[p]);
        all &= s->plan[p] >= 0;
    }
    return all;
}

/* The linear call whose nodes include v, or NULL. */
static const struct lin *lin_of(const struct doc *d, int32_t v) {
    int32_t lo = 0, hi = d->nlin; /* the first call with out > v is at hi */
    while (lo < hi) {
        int32_t mid = lo + (hi - lo) / 2;
        if (d->lin[mid].out <= v) lo = mid + 1; else hi = mid;
    }
    if (!lo) return NULL;
    const struct lin *l = &d->lin[lo - 1];
    return v < l->out + l->nout + 2 * (int64_t)l->nin * l->nout ? l : NULL;
}

/* Row kernels. A linear row's nodes (docs/graph.md) are its products m_i =
   w_i * x_i, its sums acc_0 = m_0 + 0, acc_i = acc_{i-1} + m_i, and its
   output acc_{nin-1}. Every acc and m has one parent and starts at +0, so
   once the output's gradient G is final each receives 0 + 1*G' = G', with
   G' = 0 + G (the same double for all of them). In the reference's order the
   m_i then pass x_i * G' to w_i and w_i * G' to x_i, by descending i, and the
   accs pass nothing outside the row. Code ROW(out, w_row, x, hi, lo) makes
   exactly those additions for m_hi down to m_lo, a stretch of the order with
   no other node between them (a row the sort left to visit x_i is split
   there), so every gradient outside the rows' insides receives the same
   contributions in the same order. The insides' own gradients are not
   written. The local gradients x_i and w_i are read from the values, as fast
   mode's kernels do: the same doubles, as long as nothing writes a value
   between a doc graph's forward and its backward (training does not). */
#define ROW (-1) /* code: ROW, out, w_row, x, hi, lo; any other word is a node */

/* Cache piece_p, the post-order t[0, len), as backward code: the nodes in
   reverse, a linear row's products as ROW stretches, its sums left out. */
static int32_t add_piece(mg_store *s, const struct doc *d, int32_t p, const int32_t *t, int64_t len) {
    int64_t c = s->piececap;
    if (grow(&s->code, &s->codecap, s->ncode + 6 * len, sizeof *s->code, INT64_MAX / 8) ||
        grow(&s->pieces, &c, s->npieces + 1, sizeof *s->pieces, INT64_MAX / 64))
        return fail(s, MG_ENOMEM, "cannot allocate the order's cache");
    s->piececap = c;
    if (p >= s->nhead) {
        c = s->nhead;
        if (grow(&s->head, &c, p + 1, sizeof *s->head, INT32_MAX)) return fail(s, MG_ENOMEM, "cannot allocate the order's cache");
        for (int64_t i = s->nhead; i < c; i++) s->head[i] = -1;
        s->nhead = c;
    }
    int64_t at = s->ncode, row = -1; /* row: the last ROW's code */
    int32_t *code = s->code;
    for (int64_t i = len - 1; i >= 0; i--) {
        int32_t v = t[i];
        const struct lin *l = lin_of(d, v);
        if (!l) {
            code[s->ncode++] = v;
            continue;
        }
        int32_t rel = v - l->out - l->nout, o = rel / (2 * l->nin), k = rel % (2 * l->nin);
        if (rel < 0 || k >= l->nin) continue; /* an output or a sum */
        if (row == s->ncode - 6 && code[row + 1] == l->out + o && code[row + 5] == k + 1) {
            code[row + 5] = k;
            continue;
        }
        row = s->ncode;
        int32_t w[6] = {ROW, l->out + o, l->w + o * l->nin, l->x, k, k};
        memcpy(code + row, w, sizeof w);
        s->ncode += 6;
    }
    s->pieces[s->npieces] = (struct piece){p, s->plan_target[p], d->hash[p], s->head[p], at, s->ncode - at};
    s->head[p] = s->npieces;
    s->plan[p] = s->npieces++;
    s->v.pieces = (int32_t)s->npieces;
    return 0;
}

/* A ROW stretch: each k's two additions go to nodes no other k touches (w
   and x are disjoint, mg_doc_program checks), so the k may run in any order,
   and in vector registers: the same correctly rounded * and +. */
static void row_back(double *restrict gw, double *restrict gx, const double *restrict w,
                     const double *restrict x, int32_t lo, int32_t hi, double g) {
    for (int32_t k = lo; k < hi; k++) {
        gw[k] += x[k] * g;
        gx[k] += w[k] * g;
    }
}

/* Backward through a doc graph by its pieces: the reference's order without
   the sort. Skipping a node whose gradient is zero changes no bit: its
   contributions lg * 0 are zeros (every lg is finite), and adding a zero to a
   gradient leaves it as it is (gradients start at +0 and so are never -0). */
static void backward_pieces(mg_store *s, const struct doc *d) {
    const int32_t (*kid)[2] = (const int32_t (*)[2])s->kid;
    const double (*lg)[2] = (const double (*)[2])s->lg;
    double *grad = s->v.grad;
    int32_t sp = kid[d->root][0]; /* S_{n-1} */
    grad[d->root] = 1.0;
    node_back(s, d->root);
    for (int32_t p = d->npos - 1; p >= 0; p--) {
        int32_t prev = kid[sp][0]; /* S_{p-1}, or l_0 */
        node_back(s, sp);
        const struct piece *pc = &s->pieces[s->plan[p]];
        const int32_t *code = s->code + pc->at;
        for (const int32_t *i = code, *end = code + pc->len; i < end; ) {
            if (*i == ROW) {
                double g = 0.0 + grad[i[1]];
                if (g != 0) row_back(grad + i[2], grad + i[3], s->v.val + i[2], s->v.val + i[3], i[5], i[4] + 1, g);
                i += 6;
                continue;
            }
            int32_t v = *i++;
            double g = grad[v];
            if (g == 0) continue;
            grad[kid[v][0]] += lg[v][0] * g;
            if (kid[v][1] >= 0) grad[kid[v][1]] += lg[v][1] * g;
        }
        sp = prev;
    }
}

static int32_t sort_buffers(mg_store *s) {
    int64_t c = s->scap;
    if (grow(&s->seen, &c, s->v.n, sizeof *s->seen, INT32_MAX) ||
        (c = s->scap, grow(&s->topo, &c, s->v.n, sizeof *s->topo, INT32_MAX)) ||
        (c = s->scap, grow(&s->stack, &c, s->v.n, 2 * sizeof *s->stack, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate the backward pass's buffers");
    s->scap = c;
    return 0;
}

/* Backward in the reference's order, the reverse of that post-order: the
   order in which a shared child receives its contributions decides the last
   bits of its gradient. */
static int32_t backward_full(mg_store *s, int32_t root) {
    int32_t r = sort_buffers(s);
    if (r) return r;
    if (s->lean) return fail(s, MG_EARG, "this graph was replayed without the insides of its linear rows: "
                                          "only its loss has a backward (reset and build it again)");
    s->v.grad[root] = 1.0;
    for (int32_t i = topo_sort(s, root, 0, s->v.n) - 1; i >= 0; i--) node_back(s, s->topo[i]);
    return 0;
}

/* A doc graph: sort the positions whose piece is not cached, each alone, and
   cache them; then backward by the pieces. Checking: the full backward too,
   from the same gradients, and every gradient compared. */
static int32_t backward_doc(mg_store *s, const struct doc *d) {
    /* again, the reference would also pass on what the rows' insides got the
       first time, which the row kernels do not keep */
    if (s->backed) return fail(s, MG_EARG, "a doc_loss graph's backward runs once per graph: reset first");
    int32_t r = sort_buffers(s);
    if (r) return r;
    for (int32_t p = 0; p < d->npos; p++) { /* a position reaches no later node: the others may be lean */
        int32_t nt = s->plan[p] < 0 ? topo_sort(s, d->loss[p], d->first[p], d->loss[p] + 1) : 0;
        if (nt < 0) return fail(s, MG_EARG, "position %d of a doc_loss graph reaches a later node", p);
        if (nt && (r = add_piece(s, d, p, s->topo, nt))) return r;
    }
    s->backed = 1;
    if (!s->check) {
        backward_pieces(s, d);
        return 0;
    }
    int64_t c = s->gcap;
    if (grow(&s->g0, &c, s->v.n, sizeof *s->g0, INT32_MAX) ||
        (c = s->gcap, grow(&s->gref, &c, s->v.n, sizeof *s->gref, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate the checking mode's buffers");
    s->gcap = c;
    double *grad = s->v.grad;
    size_t bytes = (size_t)s->v.n * sizeof *grad;
    memcpy(s->g0, grad, bytes);
    if ((r = backward_full(s, d->root))) return r;
    memcpy(s->gref, grad, bytes);
    memcpy(grad, s->g0, bytes);
    backward_pieces(s, d);
    uint8_t *inside = s->seen; /* the rows' insides, whose gradients are not written */
    memset(inside, 0, (size_t)s->v.n);
    for (const struct lin *l = d->lin; l < d->lin + d->nlin; l++)
        memset(inside + l->out + l->nout, 1, 2 * (size_t)l->nin * l->nout);
    for (int32_t i = 0; i < s->v.n; i++)
        if (!inside[i] && memcmp(&grad[i], &s->gref[i], sizeof *grad)) {
            fail(s, MG_EARG, "checking: node %d's gradient is %.17g by the cached order, %.17g by the full sort",
                 i, grad[i], s->gref[i]);
            memcpy(grad, s->gref, bytes);
            return MG_EARG;
        }
    return 0;
}

static int32_t backward_exact(mg_store *s, int32_t root) {
    const struct doc *d = s->cur >= 0 ? s->progs[s->cur].doc : NULL;
    return d && root == d->root ? backward_doc(s, d) : backward_full(s, root);
}

/* Fast mode: the tape's ops in reverse, each by its table row's backward:
   reverse creation order, no topological sort. Gradients would double up if
   run again over the same graph, so once per reset. */
static int32_t backward_fast(mg_store *s, int32_t root) {
    if (s->backed) return fail(s, MG_EARG, "fast mode runs backward once per graph: reset first");
    s->backed = 1;
    s->v.grad[root] = 1.0;
    for (int64_t end = s->ntape; end > 0; ) {
        int32_t na = s->tape[end - 1];
        const int32_t *rec = s->tape + end - 4 - na;
        OPS[rec[0]].back(s, rec + 3, rec[2]);
        end -= 4 + na;
    }
    return 0;
}

static int32_t backward(mg_store *s, int32_t root) {
    CHECK_ID(root);
    return s->mode == MG_FAST ? backward_fast(s, root) : backward_exact(s, root);
}
int32_t mg_backward(mg_store *s, int32_t root) { int32_t r = enter(s); return r ? r : leave(s, backward(s, root)); }

/* ------------------------------------------------------------------------ */
/* reading and writing numbers, and Adam on the parameters, under the store's
   lock (another thread's op could move the arrays) */

int32_t mg_read(mg_store *s, int32_t first, int32_t n, int32_t grad, double *out) {
    int32_t r = enter(s);
    if (r) return r;
    if (n < 0 || (n && !out) || first < 0 || (int64_t)first + n > s->v.n)
        return leave(s, fail(s, MG_EARG, "nodes [%d, %d+%d) are not within the %d nodes", first, first, n, s->v.n));
    if (n) memcpy(out, (grad ? s->v.grad : s->v.val) + first, (size_t)n * sizeof *out);
    return leave(s, 0);
}

int32_t mg_write_params(mg_store *s, const double *in, int32_t n, int32_t grad) {
    int32_t r = enter(s);
    if (r) return r;
    if (n != s->v.nparams || !in) return leave(s, fail(s, MG_EARG, "%d numbers for %d parameters", n, s->v.nparams));
    for (int32_t i = 0; i < n; i++)
        if (!isfinite(in[i])) return leave(s, fail(s, MG_EARG, "parameter %d would be %g, not finite", i, in[i]));
    memcpy(grad ? s->v.grad : s->v.val, in, (size_t)n * sizeof *in);
    return leave(s, 0);
}

int64_t mg_adam_step(mg_store *s, double *m, int64_t nm, double *v, int64_t nv, double lr_t, double b1,
                     double b2, double bc1, double bc2, double eps, int64_t *mismatch) {
    int32_t r = enter(s);
    if (r) return r;
    if (nm != s->v.nparams || nv != s->v.nparams || !m || !v)
        return leave(s, fail(s, MG_EARG, "Adam's moments hold %lld and %lld numbers, for %d parameters",
                             (long long)nm, (long long)nv, s->v.nparams));
    int64_t slow = mg_adam(s->v.val, s->v.grad, m, v, nm, lr_t, b1, b2, bc1, bc2, eps, s->mode == MG_EXACT, mismatch);
    if (slow < 0) fail(s, MG_EARG, "Adam needs distinct arrays, bc1 and bc2 nonzero and eps > 0");
    pthread_mutex_unlock(&s->lock);
    return slow;
}

/* ------------------------------------------------------------------------ */
/* the Value API: micrograd's Value, one node per Value, for microgpt_c.Value.

   A Value is a handle, generation << 31 | node id (in a double: microgpt.h).
   The store's generation changes at every reset and compaction, and
   generations are unique across stores, so a handle made before a reset, or
   by another store, names no node here: it is refused, never read. (The
   counter is 22 bits, all a double leaves: a handle could only alias after
   2**22 resets and compactions in one process.) Every call holds the store's
   lock, so threads sharing a store take turns; a failed call's message is
   kept per thread (mg_value_error). */

/* Retire this generation's handles: a reset or compaction makes every
   handle made before stale. A generation none was made in can go on. The
   22 bits a handle holds are never reused: the last generation's store
   refuses to retire it, an error rather than a handle naming a new node. */
#define GENERATIONS ((1u << 22) - 1)
static int32_t new_generation(mg_store *s) {
    if (!s->handed) return 0;
    if (s->v.generation == GENERATIONS)
        return fail(s, MG_EARG, "this store's Value handles are used up (%u resets and compactions): "
                                "make a new store", GENERATIONS - 1);
    s->v.generation++;
    s->handed = 0;
    return 0;
}

static __thread char value_err[sizeof ((mg_view *)0)->err];
static __thread int32_t value_code;
const char *mg_value_error(void) { return value_err; }
int32_t mg_value_failed(void) { return value_code; }

/* < 2**53: exact in a double */
static mg_handle handle(mg_store *s, int32_t id) {
    s->handed = 1;
    return (mg_handle)((uint64_t)s->v.generation << 31 | (uint32_t)id);
}

/* The node handle h names, or -1 (NaN, fractions and all else included). */
static int32_t node_of(const mg_store *s, mg_handle h) {
    if (!(h >= 0 && h < 0x1p53) || (double)(uint64_t)h != h) return -1;
    uint64_t u = (uint64_t)h;
    int32_t id = (int32_t)(u & INT32_MAX);
    return u >> 31 == s->v.generation && id < s->v.n ? id : -1;
}

static int32_t stale(mg_store *s) {
    return fail(s, MG_EARG, "stale Value: its store was reset after it was made");
}

#define LOCK(fail_value) do { if (!s) { value_code = MG_EARG; strcpy(value_err, "no store"); return fail_value; } \
                              pthread_mutex_lock(&s->lock); } while (0)

/* Unlock; the outcome (and an error's message) stays with this thread. */
static mg_handle unlock(mg_store *s, mg_handle r) {
    value_code = r < 0 ? (int32_t)r : 0;
    if (r < 0) memcpy(value_err, s->v.err, sizeof value_err);
    pthread_mutex_unlock(&s->lock);
    return r;
}

static mg_handle handle_of(mg_store *s, int32_t r) { return r < 0 ? r : handle(s, r); }

static mg_handle unary(mg_store *s, int32_t op, mg_handle x) {
    unary_args a = {node_of(s, x)};
    return a.a < 0 ? stale(s) : handle_of(s, call(s, op, &a, WORDS(a)));
}

static mg_handle binary(mg_store *s, int32_t op, mg_handle x, mg_handle y) {
    binary_args a = {node_of(s, x), node_of(s, y)};
    return a.a < 0 || a.b < 0 ? stale(s) : handle_of(s, call(s, op, &a, WORDS(a)));
}

/* x op Value(c): the leaf, then the op, as the reference makes them; neither
   if the op fails. One call where Python would make two. */
static mg_handle with_number(mg_store *s, int32_t op, mg_handle x, double c) {
    int32_t n0 = s->v.n;
    int64_t t0 = s->ntape;
    binary_args a = {node_of(s, x), -1};
    if (a.a < 0) return stale(s);
    leaf_args l = {f64_of(c)};
    int32_t r = call(s, OP_leaf, &l, WORDS(l));
    if (r >= 0 && (a.b = r, r = call(s, op, &a, WORDS(a))) < 0) { s->v.n = n0; s->ntape = t0; }
    return handle_of(s, r);
}

mg_handle mg_value_leaf(mg_store *s, double v) {
    LOCK(MG_EARG);
    leaf_args a = {f64_of(v)};
    return unlock(s, handle_of(s, call(s, OP_leaf, &a, WORDS(a))));
}
mg_handle mg_value_add(mg_store *s, mg_handle x, mg_handle y) { LOCK(MG_EARG); return unlock(s, binary(s, OP_add, x, y)); }
mg_handle mg_value_mul(mg_store *s, mg_handle x, mg_handle y) { LOCK(MG_EARG); return unlock(s, binary(s, OP_mul, x, y)); }
mg_handle mg_value_addc(mg_store *s, mg_handle x, double c) { LOCK(MG_EARG); return unlock(s, with_number(s, OP_add, x, c)); }
mg_handle mg_value_mulc(mg_store *s, mg_handle x, double c) { LOCK(MG_EARG); return unlock(s, with_number(s, OP_mul, x, c)); }
mg_handle mg_value_log(mg_store *s, mg_handle x) { LOCK(MG_EARG); return unlock(s, unary(s, OP_log, x)); }
mg_handle mg_value_exp(mg_store *s, mg_handle x) { LOCK(MG_EARG); return unlock(s, unary(s, OP_exp, x)); }
mg_handle mg_value_relu(mg_store *s, mg_handle x) { LOCK(MG_EARG); return unlock(s, unary(s, OP_relu, x)); }
mg_handle mg_value_tanh(mg_store *s, mg_handle x) { LOCK(MG_EARG); return unlock(s, unary(s, OP_tanh, x)); }

mg_handle mg_value_pow(mg_store *s, mg_handle x, double p) {
    LOCK(MG_EARG);
    pow_args a = {node_of(s, x), f64_of(p)};
    return unlock(s, a.a < 0 ? stale(s) : handle_of(s, call(s, OP_pow, &a, WORDS(a))));
}

double mg_value_get(mg_store *s, mg_handle x, int32_t grad) {
    LOCK(NAN);
    int32_t i = node_of(s, x);
    double r = i < 0 ? NAN : (grad ? s->v.grad : s->v.val)[i];
    unlock(s, i < 0 ? stale(s) : 0);
    return r;
}

int32_t mg_value_set(mg_store *s, mg_handle x, int32_t grad, double v) {
    LOCK(MG_EARG);
    int32_t i = node_of(s, x), r = 0;
    if (i < 0) r = stale(s);
    else if (!isfinite(v)) r = fail(s, MG_EMATH, "a Value's %s must be finite, not %g", grad ? "grad" : "data", v);
    else (grad ? s->v.grad : s->v.val)[i] = v;
    return (int32_t)unlock(s, r);
}

int32_t mg_value_backward(mg_store *s, mg_handle root) {
    LOCK(MG_EARG);
    int32_t i = node_of(s, root);
    return (int32_t)unlock(s, i < 0 ? stale(s) : backward(s, i));
}

/* Drop every node but the parameters and the n Values keep[]: each becomes a
   leaf with its value and gradient, its new handle in kept[i]. */
static int32_t reset_keeping(mg_store *s, const mg_handle *keep, int32_t n, mg_handle *kept) {
    if (n < 0 || (n && (!keep || !kept))) return fail(s, MG_EARG, "keep %d Values", n);
    for (int32_t i = 0; i < n; i++)
        if (node_of(s, keep[i]) < 0) return fail(s, MG_EARG, "stale Value: keep[%d] was made before a reset", i);
    double *vg = malloc(2 * (size_t)(n ? n : 1) * sizeof *vg); /* value, gradient of each */
    if (!vg || grow(&s->tmp, &s->tmpcap, s->v.n, sizeof *s->tmp, INT32_MAX)) {
        free(vg);
        return fail(s, MG_ENOMEM, "cannot allocate the kept Values");
    }
    int32_t *slot = s->tmp; /* old id -> new id, for the kept ids only: a Value kept twice stays one node */
    int32_t m = 0, np = s->v.nparams;
    for (int32_t i = 0; i < n; i++) slot[node_of(s, keep[i])] = -1;
    for (int32_t i = 0; i < n; i++) {
        int32_t id = node_of(s, keep[i]);
        if (id >= np && slot[id] < 0) {
            vg[2 * m] = s->v.val[id]; vg[2 * m + 1] = s->v.grad[id];
            slot[id] = np + m++;
        }
    }
    for (int32_t i = 0; i < n; i++) {
        int32_t id = node_of(s, keep[i]);
        kept[i] = id < np ? id : slot[id]; /* ids for now: handles once the generation is new */
    }
    int32_t r = reset(s);
    if (r) {
        free(vg);
        return r;
    }
    for (int32_t j = 0; j < m; j++) s->v.grad[leaf(s, vg[2 * j])] = vg[2 * j + 1]; /* room: m <= old n - np */
    for (int32_t i = 0; i < n; i++) kept[i] = handle(s, (int32_t)kept[i]);
    free(vg);
    return 0;
}

int32_t mg_value_reset(mg_store *s, const mg_handle *keep, int32_t n, mg_handle *kept) {
    LOCK(MG_EARG);
    return (int32_t)unlock(s, reset_keeping(s, keep, n, kept));
}

/* Keep only the parameters and the nodes the n Values handles[] reach (their
   graphs whole: same children, same order, so backward gives the same bits),
   moved down to consecutive ids; handles[i] becomes the new handle. A handle
   that names no node (a stale Value) stays as it is. Exact mode only, with no
   recorded programs (their ids would move). */
static int32_t compact(mg_store *s, mg_handle *handles, int32_t n) {
    if (n < 0 || (n && !handles)) return fail(s, MG_EARG, "compact %d Values", n);
    if (s->mode != MG_EXACT || s->recording || s->nprog)
        return fail(s, MG_EARG, "only an exact-mode store with no recorded programs can be compacted");
    int64_t c = s->scap;
    int32_t *ids = malloc((size_t)(n ? n : 1) * sizeof *ids); /* each handle's node, -1 if none */
    if (!ids || grow(&s->seen, &c, s->v.n, sizeof *s->seen, INT32_MAX) ||
        (c = s->scap, grow(&s->topo, &c, s->v.n, sizeof *s->topo, INT32_MAX)) ||
        (c = s->scap, grow(&s->stack, &c, s->v.n, 2 * sizeof *s->stack, INT32_MAX))) {
        free(ids);
        return fail(s, MG_ENOMEM, "cannot allocate the compaction's buffers");
    }
    s->scap = c;
    uint8_t *keep = s->seen;
    int32_t *to = s->topo, *st = s->stack, sp = 0, np = s->v.nparams, m = np;
    if (s->v.n) memset(keep, 0, (size_t)s->v.n); /* (an empty store has no buffer yet) */
    for (int32_t i = 0; i < n; i++) { /* mark what the Values reach */
        int32_t id = ids[i] = node_of(s, handles[i]);
        if (id < np || keep[id]) continue;
        keep[id] = 1;
        st[sp++] = id;
        while (sp) {
            int32_t v = st[--sp];
            for (int32_t j = 0; j < 2; j++) {
                int32_t k = s->kid[v][j];
                if (k >= np && !keep[k]) { keep[k] = 1; st[sp++] = k; }
            }
        }
    }
    int32_t r = new_generation(s); /* the handles read above; the new ones below */
    if (r) {
        free(ids);
        return r;
    }
    for (int32_t i = 0; i < np; i++) to[i] = i;
    for (int32_t i = np; i < s->v.n; i++) { /* down, in creation order: children (older) move first */
        if (!keep[i]) continue;
        int32_t j = to[i] = m++;
        s->v.val[j] = s->v.val[i];
        s->v.grad[j] = s->v.grad[i];
        for (int32_t k = 0; k < 2; k++) {
            int32_t kid = s->kid[i][k];
            s->kid[j][k] = kid < 0 ? kid : to[kid];
            s->lg[j][k] = s->lg[i][k];
        }
    }
    s->v.n = m;
    s->ntape = 0;
    s->backed = 0;
    for (int32_t i = 0; i < n; i++)
        if (ids[i] >= 0) handles[i] = handle(s, to[ids[i]]);
    free(ids);
    return 0;
}

int32_t mg_value_compact(mg_store *s, mg_handle *handles, int32_t n, int32_t nodes) {
    LOCK(MG_EARG);
    if (nodes >= 0 && s->v.n != nodes) return (int32_t)unlock(s, 0); /* a node was made since the Values were listed */
    int32_t r = compact(s, handles, n);
    return (int32_t)unlock(s, r ? r : 1);
}
