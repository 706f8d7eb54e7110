/* exact.c: exact mode's shortcuts for the graphs of model.doc_loss, each
   proven to give the core's bits (docs/exact.md): the reference's order,
   cached by position; row kernels for linear rows; a lean replay that leaves
   out the rows' insides; and a verifying mode that runs the core's full
   backward beside them and compares every gradient. */
#include "machinery.h"

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
   declared as doc_loss's) always take the full sort. The verifying mode
   (mg_verify) builds every node, runs both and compares every gradient. */



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
int32_t doc_positions(const struct doc *d) { return d->npos; }
struct piece { int32_t pos, target; uint64_t hash; int64_t next, at, len; }; /* code[at, at+len) */
void doc_free(struct doc *d);

/* Exact mode, lean (a doc graph whose backward runs by cached pieces): the
   same node ids, but only the outputs are written, with the exact row's
   values; the insides are needed by nothing but the sort, which this graph
   does not run. Finiteness is checked on the outputs only: a non-finite
   product or partial sum cannot come back to a finite number along the sum
   (inf + finite is inf, inf - inf and NaN + anything are NaN), and the
   products' local gradients are the operands, already finite. */
int32_t linear_lean(mg_store *s, const linear_args *a) {
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

void doc_free(struct doc *d) {
    if (!d) return;
    free(d->first); free(d->loss); free(d->target); free(d->hash); free(d->lin);
    free(d);
}

static uint64_t fnv(uint64_t h, const int32_t *w, int64_t n) {
    for (int64_t i = 0; i < n; i++) h = (h ^ (uint32_t)w[i]) * 1099511628211u;
    return h;
}

/* Declare program prog to be doc_loss's forward; checks its shape. */
int32_t doc_program(mg_store *s, int32_t prog) {
    if (prog < 0 || prog >= s->m->nprog) return fail(s, MG_EARG, "no program %d", prog);
    struct prog *p = &s->m->progs[prog];
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
    return s->m->current == prog && plan(s, d) < 0 ? MG_ENOMEM : 0;
}


static int64_t find_piece(const mg_store *s, int32_t pos, int32_t target, uint64_t hash) {
    for (int64_t k = pos < s->m->nhead ? s->m->head[pos] : -1; k >= 0; k = s->m->pieces[k].next)
        if (s->m->pieces[k].target == target && s->m->pieces[k].hash == hash) return k;
    return -1;
}

/* For the doc graph about to be built, the cached piece of each position;
   returns whether all are. */
int32_t plan(mg_store *s, const struct doc *d) {
    int64_t c = s->m->plancap;
    if (grow(&s->m->plan, &c, d->npos, sizeof *s->m->plan, INT32_MAX) ||
        (c = s->m->plancap, grow(&s->m->plan_target, &c, d->npos, sizeof *s->m->plan_target, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate a plan");
    s->m->plancap = c;
    int32_t all = 1;
    for (int32_t p = 0; p < d->npos; p++) {
        int32_t ti = d->target[p];
        s->m->plan_target[p] = ti >= 0 && ti < s->ntok ? s->tok[ti] : -1; /* the tokens may change before backward */
        s->m->plan[p] = find_piece(s, p, s->m->plan_target[p], d->hash[p]);
        all &= s->m->plan[p] >= 0;
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
    int64_t c = s->m->piececap;
    if (grow(&s->m->code, &s->m->codecap, s->m->ncode + 6 * len, sizeof *s->m->code, INT64_MAX / 8) ||
        grow(&s->m->pieces, &c, s->m->npieces + 1, sizeof *s->m->pieces, INT64_MAX / 64))
        return fail(s, MG_ENOMEM, "cannot allocate the order's cache");
    s->m->piececap = c;
    if (p >= s->m->nhead) {
        c = s->m->nhead;
        if (grow(&s->m->head, &c, p + 1, sizeof *s->m->head, INT32_MAX)) return fail(s, MG_ENOMEM, "cannot allocate the order's cache");
        for (int64_t i = s->m->nhead; i < c; i++) s->m->head[i] = -1;
        s->m->nhead = c;
    }
    int64_t at = s->m->ncode, row = -1; /* row: the last ROW's code */
    int32_t *code = s->m->code;
    for (int64_t i = len - 1; i >= 0; i--) {
        int32_t v = t[i];
        const struct lin *l = lin_of(d, v);
        if (!l) {
            code[s->m->ncode++] = v;
            continue;
        }
        int32_t rel = v - l->out - l->nout, o = rel / (2 * l->nin), k = rel % (2 * l->nin);
        if (rel < 0 || k >= l->nin) continue; /* an output or a sum */
        if (row == s->m->ncode - 6 && code[row + 1] == l->out + o && code[row + 5] == k + 1) {
            code[row + 5] = k;
            continue;
        }
        row = s->m->ncode;
        int32_t w[6] = {ROW, l->out + o, l->w + o * l->nin, l->x, k, k};
        memcpy(code + row, w, sizeof w);
        s->m->ncode += 6;
    }
    s->m->pieces[s->m->npieces] = (struct piece){p, s->m->plan_target[p], d->hash[p], s->m->head[p], at, s->m->ncode - at};
    s->m->head[p] = s->m->npieces;
    s->m->plan[p] = s->m->npieces++;
    s->v.pieces = (int32_t)s->m->npieces;
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
   contributions local_grad * 0 are zeros (every local_grad is finite), and adding a zero to a
   gradient leaves it as it is (gradients start at +0 and so are never -0). */
static void backward_pieces(mg_store *s, const struct doc *d) {
    const int32_t (*child)[2] = (const int32_t (*)[2])s->child;
    const double (*local_grad)[2] = (const double (*)[2])s->local_grad;
    double *grad = s->v.grad;
    int32_t sp = child[d->root][0]; /* S_{n-1} */
    grad[d->root] = 1.0;
    node_back(s, d->root);
    for (int32_t p = d->npos - 1; p >= 0; p--) {
        int32_t prev = child[sp][0]; /* S_{p-1}, or l_0 */
        node_back(s, sp);
        const struct piece *pc = &s->m->pieces[s->m->plan[p]];
        const int32_t *code = s->m->code + pc->at;
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
            grad[child[v][0]] += local_grad[v][0] * g;
            if (child[v][1] >= 0) grad[child[v][1]] += local_grad[v][1] * g;
        }
        sp = prev;
    }
}

/* A doc graph: sort the positions whose piece is not cached, each alone, and
   cache them; then backward by the pieces. Checking: the full backward too,
   from the same gradients, and every gradient compared. */
static int32_t backward_doc(mg_store *s, const struct doc *d) {
    /* again, the reference would also pass on what the rows' insides got the
       first time, which the row kernels do not keep */
    if (s->m->backward_done) return fail(s, MG_EARG, "a doc_loss graph's backward runs once per graph: reset first");
    int32_t r = sort_buffers(s);
    if (r) return r;
    for (int32_t p = 0; p < d->npos; p++) { /* a position reaches no later node: the others may be lean */
        int32_t nt = s->m->plan[p] < 0 ? topo_sort(s, d->loss[p], d->first[p], d->loss[p] + 1) : 0;
        if (nt < 0) return fail(s, MG_EARG, "position %d of a doc_loss graph reaches a later node", p);
        if (nt && (r = add_piece(s, d, p, s->topo, nt))) return r;
    }
    s->m->backward_done = 1;
    if (!s->m->verify) {
        backward_pieces(s, d);
        return 0;
    }
    int64_t c = s->m->gcap;
    if (grow(&s->m->g0, &c, s->v.n, sizeof *s->m->g0, INT32_MAX) ||
        (c = s->m->gcap, grow(&s->m->gref, &c, s->v.n, sizeof *s->m->gref, INT32_MAX)))
        return fail(s, MG_ENOMEM, "cannot allocate the verifying mode's buffers");
    s->m->gcap = c;
    double *grad = s->v.grad;
    size_t bytes = (size_t)s->v.n * sizeof *grad;
    memcpy(s->m->g0, grad, bytes);
    backward_full(s, d->root);
    memcpy(s->m->gref, grad, bytes);
    memcpy(grad, s->m->g0, bytes);
    backward_pieces(s, d);
    uint8_t *inside = s->seen; /* the rows' insides, whose gradients are not written */
    memset(inside, 0, (size_t)s->v.n);
    for (const struct lin *l = d->lin; l < d->lin + d->nlin; l++)
        memset(inside + l->out + l->nout, 1, 2 * (size_t)l->nin * l->nout);
    for (int32_t i = 0; i < s->v.n; i++)
        if (!inside[i] && memcmp(&grad[i], &s->m->gref[i], sizeof *grad)) {
            fail(s, MG_EARG, "checking: node %d's gradient is %.17g by the cached order, %.17g by the full sort",
                 i, grad[i], s->m->gref[i]);
            memcpy(grad, s->m->gref, bytes);
            return MG_EARG;
        }
    return 0;
}

/* Exact mode's backward: a doc graph's by its pieces, any other the core's. */
int32_t backward_exact(mg_store *s, int32_t root) {
    const struct doc *d = s->m->current >= 0 ? s->m->progs[s->m->current].doc : NULL;
    if (d && root == d->root) return backward_doc(s, d);
    if (s->m->lean) return fail(s, MG_EARG, "this graph was replayed without the insides of its linear rows: "
                                             "only its loss has a backward (reset and build it again)");
    return op_backward(s, root);
}
