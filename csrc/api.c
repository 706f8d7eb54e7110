/* api.c: the public entry points (microgpt.h) around the core: a store's
   life, the one-thread rule and fork, and each mg_ call of a core op. */
#include "machinery.h"

/* One thread at a time per store. The Value API's calls wait for the lock
   (they take turns, LOCK below); every other entry point is refused with
   MG_EBUSY while another thread is inside: a store's graph is one thread's
   work in progress. */
static int32_t enter(mg_store *s) {
    if (!s) return MG_EARG;
    return pthread_mutex_trylock(&s->m->lock) ? MG_EBUSY : 0;
}

static int32_t leave(mg_store *s, int32_t r) {
    pthread_mutex_unlock(&s->m->lock);
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
    for (mg_store *s = stores; s; s = s->m->next) pthread_mutex_lock(&s->m->lock);
}

static void unlock_all(void) {
    for (mg_store *s = stores; s; s = s->m->next) pthread_mutex_unlock(&s->m->lock);
    pthread_mutex_unlock(&stores_lock);
}

static void at_fork(void) { pthread_atfork(lock_all, unlock_all, unlock_all); }

static void track(mg_store *s, int on) {
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, at_fork);
    pthread_mutex_lock(&stores_lock);
    if (on) {
        s->m->next = stores;
        if (stores) stores->m->prev = s;
        stores = s;
    } else {
        if (s->m->prev) s->m->prev->m->next = s->m->next; else stores = s->m->next;
        if (s->m->next) s->m->next->m->prev = s->m->prev;
    }
    pthread_mutex_unlock(&stores_lock);
}

mg_store *mg_new(int32_t mode) {
    mg_store *s = store_new(mode);
    if (!s) return NULL;
    if (!(s->m = calloc(1, sizeof *s->m)) || pthread_mutex_init(&s->m->lock, NULL)) {
        free(s->m);
        store_free(s);
        return NULL;
    }
    s->v.generation = 1;
    track(s, 1);
    return s;
}

void mg_free(mg_store *s) {
    if (!s) return;
    track(s, 0);
    struct machinery *m = s->m;
    pthread_mutex_destroy(&m->lock);
    free(m);
    store_free(s);
}

mg_view *mg_view_of(mg_store *s) { return s ? &s->v : NULL; }

#define ENTRY(call) do { int32_t r_ = enter(s); return r_ ? r_ : leave(s, call); } while (0)

int32_t mg_params(mg_store *s, const double *v, int32_t n) { ENTRY(store_params(s, v, n)); }

int32_t mg_reset(mg_store *s) { ENTRY(reset(s)); }
int32_t mg_tokens(mg_store *s, const int32_t *tok, int32_t n) { ENTRY(store_tokens(s, tok, n)); }

#define OP(name, ...) do { int32_t e_ = enter(s); if (e_) return e_; int32_t n0_ = begin_op(s); \
                           return leave(s, end_op(s, #name, n0_, op_##name(s, __VA_ARGS__))); } while (0)
int32_t mg_leaf(mg_store *s, double v) { OP(leaf, v); }
int32_t mg_add(mg_store *s, int32_t x, int32_t y) { OP(add, x, y); }
int32_t mg_mul(mg_store *s, int32_t x, int32_t y) { OP(mul, x, y); }
int32_t mg_pow(mg_store *s, int32_t x, double p) { OP(pow, x, p); }
int32_t mg_log(mg_store *s, int32_t x) { OP(log, x); }
int32_t mg_exp(mg_store *s, int32_t x) { OP(exp, x); }
int32_t mg_relu(mg_store *s, int32_t x) { OP(relu, x); }
int32_t mg_tanh(mg_store *s, int32_t x) { OP(tanh, x); }
int32_t mg_vadd(mg_store *s, int32_t x, int32_t y, int32_t n) { OP(vadd, x, y, n); }
int32_t mg_embed(mg_store *s, int32_t wte, int32_t ntok, int32_t wpe, int32_t npos, int32_t n, int32_t tok,
                 int32_t pos) { OP(embed, wte, ntok, wpe, npos, n, tok, pos); }
int32_t mg_vrelu(mg_store *s, int32_t x, int32_t n) { OP(vrelu, x, n); }
int32_t mg_scale(mg_store *s, int32_t x, int32_t n, double c) { OP(scale, x, n, c); }
int32_t mg_rmsnorm(mg_store *s, int32_t x, int32_t n) { OP(rmsnorm, x, n); }
int32_t mg_linear(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout) { OP(linear, x, nin, w, nout); }
int32_t mg_softmax(mg_store *s, int32_t x, int32_t n) { OP(softmax, x, n); }
int32_t mg_attention(mg_store *s, int32_t q, int32_t n, int32_t n_head, const int32_t *keys, const int32_t *values,
                     int32_t t) { OP(attention, q, n, n_head, keys, values, t); }
int32_t mg_nll(mg_store *s, int32_t x, int32_t n, int32_t target) { OP(nll, x, n, target); }
int32_t mg_mean(mg_store *s, const int32_t *x, int32_t n) { OP(mean, x, n); }

int32_t mg_backward(mg_store *s, int32_t root) { ENTRY(op_backward(s, root)); }

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
    pthread_mutex_unlock(&s->m->lock);
    return slow;
}
