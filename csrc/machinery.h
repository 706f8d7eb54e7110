/* machinery.h: what the files around the core share (the core, core.c,
   knows none of it): the store's other state, the op table's argument
   structs, and each file's functions for the others. */
#ifndef MG_MACHINERY_H
#define MG_MACHINERY_H
#ifdef _MSC_VER /* say so rather than fail on the first pthread or vector type */
#error "microgpt_c's engine builds with GCC or clang: it uses pthreads, __thread and GCC's vector types"
#endif
#include <pthread.h>
#include "core.h"

struct machinery {
    int32_t backward_done;   /* fast mode: backward has run since the reset */
    int32_t *tape;           /* fast mode's op calls since reset: (op, nargs, out, args..., nargs) */
    int64_t ntape, tcap;
    int32_t handed;          /* a Value API handle was made in this generation */
    pthread_mutex_t lock;    /* held by the thread inside: Value API calls wait, others are refused */
    mg_store *prev, *next;   /* every live store, for fork */
};

/* the core's checks and backward, which the machinery shares (core.c) */
int32_t linear_check(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout);
int32_t attention_check(mg_store *s, int32_t q, int32_t n, int32_t n_head, const int32_t *keys,
                        const int32_t *values, int32_t t);
int32_t nll_check(mg_store *s, int32_t x, int32_t n, int32_t target);
double attention_scale(int32_t head_dim);

/* An op call's arguments are int32 words, as on the tape; a double is two. */
typedef struct { int32_t w[2]; } f64;
static inline double dbl(f64 x) { double d; memcpy(&d, &x, sizeof d); return d; }
static inline f64 f64_of(double d) { f64 x; memcpy(&x, &d, sizeof x); return x; }
#define WORDS(args) ((int32_t)(sizeof(args) / sizeof(int32_t)))
typedef struct { f64 v; } leaf_args;
typedef struct { int32_t a, b; } binary_args;
typedef struct { int32_t a; } unary_args;
typedef struct { int32_t a; f64 p; } pow_args;
typedef struct { int32_t a, b, n; } vadd_args;
typedef struct { int32_t wte, ntok, wpe, npos, n, tok, pos; } embed_args;
typedef struct { int32_t x, n; } vec_args; /* vrelu, rmsnorm, softmax */
typedef struct { int32_t x, n; f64 c; } scale_args;
typedef struct { int32_t x, nin, w, nout; } linear_args;
typedef struct { int32_t q, n, n_head, t; int32_t kv[]; } attention_args; /* t keys, then t values */
typedef struct { int32_t x, n, target; } nll_args;
typedef struct { int32_t n; int32_t x[]; } mean_args;

/* tape.c: the op table, every op's one entry */
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
int32_t call(mg_store *s, int32_t op, const void *args, int32_t na);
int32_t backward_fast(mg_store *s, int32_t root);

/* fast.c: fast mode's fused ops, each forward beside its backward */
typedef int32_t (*forward_fn)(mg_store *, const void *args);
typedef void (*backward_fn)(mg_store *, const void *args, int32_t out);
int32_t rmsnorm_fast(mg_store *s, const void *args);
int32_t linear_fast(mg_store *s, const void *args);
int32_t softmax_fast(mg_store *s, const void *args);
int32_t attention_fast(mg_store *s, const void *args);
int32_t nll_fast(mg_store *s, const void *args);
int32_t mean_fast(mg_store *s, const void *args);
void back_none(mg_store *s, const void *args, int32_t out);
void back_one(mg_store *s, const void *args, int32_t out);
void vadd_back(mg_store *s, const void *args, int32_t out);
void embed_back(mg_store *s, const void *args, int32_t out);
void vec_back(mg_store *s, const void *args, int32_t out);
void scale_back(mg_store *s, const void *args, int32_t out);
void rmsnorm_back(mg_store *s, const void *args, int32_t out);
void linear_back(mg_store *s, const void *args, int32_t out);
void softmax_back(mg_store *s, const void *args, int32_t out);
void attention_back(mg_store *s, const void *args, int32_t out);
void nll_back(mg_store *s, const void *args, int32_t out);
void mean_back(mg_store *s, const void *args, int32_t out);
void dot_rows(double *y, const double *x, const double *w, int32_t nin, int32_t nout);

/* api.c and value.c */
int32_t reset(mg_store *s);
int32_t backward(mg_store *s, int32_t root);
int32_t new_generation(mg_store *s);
#endif
