/* tape.c: the op table and the one entry to every op.

   Every op is one row of OP_LIST: its argument struct's words, its exact
   forward (the core's op, core.c), its fast forward (fast.c; NULL: the exact
   one) and its fast backward (fast.c). call() runs a row and, in fast mode,
   appends the call to the tape, which fast mode's backward walks in
   reverse. */
#include "machinery.h"

/* exact forwards: the core's ops, on the words of their argument structs */
static int32_t leaf_exact(mg_store *s, const void *args) { return op_leaf(s, dbl(((const leaf_args *)args)->v)); }
static int32_t add_exact(mg_store *s, const void *args) {
    const binary_args *a = args;
    return op_add(s, a->a, a->b);
}
static int32_t mul_exact(mg_store *s, const void *args) {
    const binary_args *a = args;
    return op_mul(s, a->a, a->b);
}
static int32_t pow_exact(mg_store *s, const void *args) {
    const pow_args *a = args;
    return op_pow(s, a->a, dbl(a->p));
}
static int32_t log_exact(mg_store *s, const void *args) { return op_log(s, ((const unary_args *)args)->a); }
static int32_t exp_exact(mg_store *s, const void *args) { return op_exp(s, ((const unary_args *)args)->a); }
static int32_t relu_exact(mg_store *s, const void *args) { return op_relu(s, ((const unary_args *)args)->a); }
static int32_t tanh_exact(mg_store *s, const void *args) { return op_tanh(s, ((const unary_args *)args)->a); }
static int32_t embed_exact(mg_store *s, const void *args) {
    const embed_args *a = args;
    return op_embed(s, a->wte, a->ntok, a->wpe, a->npos, a->n, a->tok, a->pos);
}
static int32_t vadd_exact(mg_store *s, const void *args) {
    const vadd_args *a = args;
    return op_vadd(s, a->a, a->b, a->n);
}
static int32_t vrelu_exact(mg_store *s, const void *args) {
    const vec_args *a = args;
    return op_vrelu(s, a->x, a->n);
}
static int32_t scale_exact(mg_store *s, const void *args) {
    const scale_args *a = args;
    return op_scale(s, a->x, a->n, dbl(a->c));
}
static int32_t rmsnorm_exact(mg_store *s, const void *args) {
    const vec_args *a = args;
    return op_rmsnorm(s, a->x, a->n);
}
static int32_t linear_exact(mg_store *s, const void *args) {
    const linear_args *a = args;
    return op_linear(s, a->x, a->nin, a->w, a->nout);
}
static int32_t softmax_exact(mg_store *s, const void *args) {
    const vec_args *a = args;
    return op_softmax(s, a->x, a->n);
}
static int32_t attention_exact(mg_store *s, const void *args) {
    const attention_args *a = args;
    return op_attention(s, a->q, a->n, a->n_head, a->kv, a->kv + a->t, a->t);
}
static int32_t nll_exact(mg_store *s, const void *args) {
    const nll_args *a = args;
    return op_nll(s, a->x, a->n, a->target);
}
static int32_t mean_exact(mg_store *s, const void *args) {
    const mean_args *a = args;
    return op_mean(s, a->x, a->n);
}

/* the variable-length ops: are these words one call's arguments? */
static int attention_nargs(const int32_t *w, int32_t na) {
    const attention_args *a = (const attention_args *)w;
    return na >= WORDS(attention_args) && a->t >= 1 && na == WORDS(attention_args) + 2 * (int64_t)a->t;
}
static int mean_nargs(const int32_t *w, int32_t na) {
    const mean_args *a = (const mean_args *)w;
    return na >= WORDS(mean_args) && a->n >= 1 && na == WORDS(mean_args) + (int64_t)a->n;
}




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

/* Run op with its na argument words a. In fast mode (for backward), also
   append (op, na, output, a..., na) to the tape:
   the trailing na lets backward walk it from the end. An op whose nodes hold
   a non-finite value or local gradient (overflow, say) is undone: an error. */
int32_t call(mg_store *s, int32_t op, const void *args, int32_t na) {
    if (!s) return MG_EARG;
    const struct op *o = &OPS[op];
    if (o->nargs_ok ? !o->nargs_ok(args, na) : na != o->nargs)
        return fail(s, MG_EARG, "%s given %d argument words", o->name, na);
    int64_t at = s->m->ntape;
    int32_t n0 = s->v.n;
    int taping = s->mode == MG_FAST;
    if (taping) {
        if (grow(&s->m->tape, &s->m->tcap, at + 4 + (int64_t)na, sizeof *s->m->tape, INT64_MAX / 8))
            return fail(s, MG_ENOMEM, "cannot allocate the tape");
        s->m->tape[at] = op; s->m->tape[at + 1] = na;
        memcpy(s->m->tape + at + 3, args, (size_t)na * sizeof *s->m->tape);
        s->m->tape[at + 3 + na] = na;
    }
    s->nonfinite = 0;
    int32_t r = (s->mode == MG_FAST && o->fast ? o->fast : o->exact)(s, args);
    if (r < 0) return r;
    if (s->mode == MG_FAST) /* fused nodes get their values after node() made them */
        for (int32_t i = n0; i < s->v.n; i++) s->nonfinite |= !isfinite(s->v.val[i]);
    if (s->nonfinite) { /* undo the op; name the first bad node */
        int32_t i = n0;
        while (i < s->v.n - 1 && isfinite(s->v.val[i]) && isfinite(s->local_grad[i][0]) && isfinite(s->local_grad[i][1])) i++;
        fail(s, MG_EMATH, "%s made a non-finite number (node %d: value %g, local gradients %g, %g)",
             o->name, i, s->v.val[i], s->local_grad[i][0], s->local_grad[i][1]);
        s->v.n = n0;
        return MG_EMATH;
    }
    if (taping) {
        s->m->tape[at + 2] = r;
        s->m->ntape = at + 4 + na;
    }
    return r;
}

/* Fast mode: the tape's ops in reverse, each by its table row's backward:
   reverse creation order, no topological sort. Gradients would double up if
   run again over the same graph, so once per reset. */
int32_t backward_fast(mg_store *s, int32_t root) {
    if (s->m->backward_done) return fail(s, MG_EARG, "fast mode runs backward once per graph: reset first");
    s->m->backward_done = 1;
    s->v.grad[root] = 1.0;
    for (int64_t end = s->m->ntape; end > 0; ) {
        int32_t na = s->m->tape[end - 1];
        const int32_t *rec = s->m->tape + end - 4 - na;
        OPS[rec[0]].back(s, rec + 3, rec[2]);
        end -= 4 + na;
    }
    return 0;
}

