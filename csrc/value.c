/* value.c: the Value API, micrograd's Value on the C store, one node per
   Value, for microgpt_c.Value.

   A Value is a handle, generation << 31 | node id (in a double: microgpt.h).
   A reset or compaction that drops or moves nodes starts the store's next
   generation, so a handle made before names no node: it is refused, never
   read. Generations are never reused (new_generation). Every call holds the
   store's lock, so threads sharing a store take turns; a failed call's
   message is kept per thread (mg_value_error). */
#include "machinery.h"

/* Retire this generation's handles: a reset or compaction makes every
   handle made before stale. A generation none was made in can go on. The
   22 bits a handle holds are never reused: the last generation's store
   refuses to retire it, an error rather than a handle naming a new node. */
#define GENERATIONS ((1u << 22) - 1)
static int32_t new_generation(mg_store *s) {
    if (!s->m->handed) return 0;
    if (s->v.generation == GENERATIONS)
        return fail(s, MG_EARG, "this store's Value handles are used up (%u resets and compactions): "
                                "make a new store", GENERATIONS - 1);
    s->v.generation++;
    s->m->handed = 0;
    return 0;
}

/* Drop every node but the parameters; every Value API handle made before is stale. */
int32_t reset(mg_store *s) {
    int32_t r = new_generation(s);
    if (r) return r;
    store_reset(s);
    return 0;
}

static __thread char value_err[sizeof ((mg_view *)0)->err];
static __thread int32_t value_code;
const char *mg_value_error(void) { return value_err; }
int32_t mg_value_failed(void) { return value_code; }

/* < 2**53: exact in a double */
static mg_handle handle(mg_store *s, int32_t id) {
    s->m->handed = 1;
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
                              pthread_mutex_lock(&s->m->lock); } while (0)

/* Unlock; the outcome (and an error's message) stays with this thread. */
static mg_handle unlock(mg_store *s, mg_handle r) {
    value_code = r < 0 ? (int32_t)r : 0;
    if (r < 0) memcpy(value_err, s->v.err, sizeof value_err);
    pthread_mutex_unlock(&s->m->lock);
    return r;
}

static mg_handle handle_of(mg_store *s, int32_t r) { return r < 0 ? r : handle(s, r); }

typedef int32_t (*unary_op)(mg_store *, int32_t);
typedef int32_t (*binary_op)(mg_store *, int32_t, int32_t);

static mg_handle unary(mg_store *s, const char *name, unary_op op, mg_handle x) {
    int32_t a = node_of(s, x), n0 = begin_op(s);
    return a < 0 ? stale(s) : handle_of(s, end_op(s, name, n0, op(s, a)));
}

static mg_handle binary(mg_store *s, const char *name, binary_op op, mg_handle x, mg_handle y) {
    int32_t a = node_of(s, x), b = node_of(s, y), n0 = begin_op(s);
    return a < 0 || b < 0 ? stale(s) : handle_of(s, end_op(s, name, n0, op(s, a, b)));
}

/* x op Value(c): the leaf, then the op, as the reference makes them; neither
   if the op fails. One call where Python would make two. */
static mg_handle with_number(mg_store *s, const char *name, binary_op op, mg_handle x, double c) {
    int32_t a = node_of(s, x), n0 = begin_op(s);
    if (a < 0) return stale(s);
    int32_t r = op_leaf(s, c);
    r = end_op(s, name, n0, r < 0 ? r : op(s, a, r)); /* undoes the leaf too */
    if (r < 0) s->v.n = n0;
    return handle_of(s, r);
}

mg_handle mg_value_leaf(mg_store *s, double v) {
    LOCK(MG_EARG);
    int32_t n0 = begin_op(s);
    return unlock(s, handle_of(s, end_op(s, "leaf", n0, op_leaf(s, v))));
}
mg_handle mg_value_add(mg_store *s, mg_handle x, mg_handle y) { LOCK(MG_EARG); return unlock(s, binary(s, "add", op_add, x, y)); }
mg_handle mg_value_mul(mg_store *s, mg_handle x, mg_handle y) { LOCK(MG_EARG); return unlock(s, binary(s, "mul", op_mul, x, y)); }
mg_handle mg_value_addc(mg_store *s, mg_handle x, double c) { LOCK(MG_EARG); return unlock(s, with_number(s, "add", op_add, x, c)); }
mg_handle mg_value_mulc(mg_store *s, mg_handle x, double c) { LOCK(MG_EARG); return unlock(s, with_number(s, "mul", op_mul, x, c)); }
#define VALUE_OP(name) mg_handle mg_value_##name(mg_store *s, mg_handle x) { \
    LOCK(MG_EARG); return unlock(s, unary(s, #name, op_##name, x)); }
UNARY_OPS(VALUE_OP)
#undef VALUE_OP

mg_handle mg_value_pow(mg_store *s, mg_handle x, double p) {
    LOCK(MG_EARG);
    int32_t a = node_of(s, x), n0 = begin_op(s);
    return unlock(s, a < 0 ? stale(s) : handle_of(s, end_op(s, "pow", n0, op_pow(s, a, p))));
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
    return (int32_t)unlock(s, i < 0 ? stale(s) : op_backward(s, i));
}

/* micrograd's _backward: a's gradient passed to its children, one level. */
int32_t mg_value_back_one(mg_store *s, mg_handle a) {
    LOCK(MG_EARG);
    int32_t i = node_of(s, a);
    if (i >= 0) node_back(s, i);
    return (int32_t)unlock(s, i < 0 ? stale(s) : 0);
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
   that names no node (a stale Value) stays as it is. Exact mode only. */
static int32_t compact(mg_store *s, mg_handle *handles, int32_t n) {
    if (n < 0 || (n && !handles)) return fail(s, MG_EARG, "compact %d Values", n);
    if (s->mode != MG_EXACT) return fail(s, MG_EARG, "only an exact-mode store can be compacted");
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
                int32_t k = s->child[v][j];
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
            int32_t child = s->child[i][k];
            s->child[j][k] = child < 0 ? child : to[child];
            s->local_grad[j][k] = s->local_grad[i][k];
        }
    }
    s->v.n = m;
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

