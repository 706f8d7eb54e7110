/* fast.c: fast mode. Its ops make fused nodes (one per output, with no
   children: each op's backward below knows what they depend on), and its
   backward walks the tape in reverse creation order (tape.c), each op's
   forward beside its backward. Sums may be reordered; the tests hold fast
   mode's losses to exact mode's within 1e-10 (and csrc/doc_fast.c, fast
   mode's whole-document kernel, to this file's op by op). */
#include "machinery.h"

/* Fast mode: k fused nodes on consecutive ids, values to be filled by the op,
   no children (their op's backward kernel knows what they depend on). */
static int32_t fresh(mg_store *s, int32_t k) {
    int32_t first = s->v.n;
    for (int32_t i = 0; i < k; i++) leaf(s, 0.0);
    return first;
}

/* The values softmax() gives, for fast mode: y may be x. */
static void softmax_vals(double *y, const double *x, int32_t n) {
    double mx = x[0], total = 0.0;
    for (int32_t i = 1; i < n; i++) if (x[i] > mx) mx = x[i];
    for (int32_t i = 0; i < n; i++) total = total + (y[i] = exp(x[i] + -mx));
    double inv = pow(total, -1);
    for (int32_t i = 0; i < n; i++) y[i] = y[i] * inv;
}

/* Fast mode's backward, for ops whose nodes have children: k nodes, last
   first. Nodes whose gradient is zero pass nothing on and are skipped. */

static void back_nodes(mg_store *s, int32_t out, int32_t k) {
    double *grad = s->v.grad;
    for (int32_t i = out + k - 1; i >= out; i--) {
        double g = grad[i];
        if (g == 0) continue;
        for (int32_t j = 0; j < 2 && s->child[i][j] >= 0; j++) grad[s->child[i][j]] += s->local_grad[i][j] * g;
    }
}

void back_none(mg_store *s, const void *args, int32_t out) { (void)s; (void)args; (void)out; }
void back_one(mg_store *s, const void *args, int32_t out) { (void)args; back_nodes(s, out, 1); }

void vadd_back(mg_store *s, const void *args, int32_t out) { back_nodes(s, out, ((const vadd_args *)args)->n); }

void embed_back(mg_store *s, const void *args, int32_t out) { back_nodes(s, out, ((const embed_args *)args)->n); }

void vec_back(mg_store *s, const void *args, int32_t out) { back_nodes(s, out, ((const vec_args *)args)->n); }

void scale_back(mg_store *s, const void *args, int32_t out) { back_nodes(s, out, ((const scale_args *)args)->n); }

int32_t rmsnorm_fast(mg_store *s, const void *args) {
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
void rmsnorm_back(mg_store *s, const void *args, int32_t out) {
    const vec_args *a = args;
    int32_t x = a->x, n = a->n;
    const double *xv = s->v.val + x, *g = s->v.grad + out;
    double ss = 0.0, gx = 0.0;
    for (int32_t i = 0; i < n; i++) { ss = ss + xv[i] * xv[i]; gx = gx + g[i] * xv[i]; }
    double r = pow(ss / n + 1e-5, -0.5), k = -gx * r * r * r / n;
    double *dx = s->v.grad + x;
    for (int32_t i = 0; i < n; i++) dx[i] += g[i] * r + k * xv[i];
}

/* y[o] = 0 + w_o[0] x[0] + w_o[1] x[1] + ..., left to right: the bits of the
   exact row's sum (m_0 + 0 is 0 + m_0). Four rows at a time: four independent
   sums in flight, each summed in that order. */
void dot_rows(double *y, const double *x, const double *w, int32_t nin, int32_t nout) {
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

int32_t linear_fast(mg_store *s, const void *args) {
    const linear_args *a = args;
    int32_t r = linear_check(s, a->x, a->nin, a->w, a->nout);
    if (r) return r;
    RESERVE(a->nout, 0);
    int32_t out = fresh(s, a->nout);
    dot_rows(s->v.val + out, s->v.val + a->x, s->v.val + a->w, a->nin, a->nout);
    return out;
}
/* out_o = w_o . x: dw_o += g_o x, dx += g_o w_o */
void linear_back(mg_store *s, const void *args, int32_t out) {
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

int32_t softmax_fast(mg_store *s, const void *args) {
    const vec_args *a = args;
    CHECK_VEC(a->x, a->n);
    RESERVE(a->n, 0);
    int32_t out = fresh(s, a->n);
    softmax_vals(s->v.val + out, s->v.val + a->x, a->n);
    return out;
}
/* p = softmax(x): dx_j += p_j (g_j - sum_i g_i p_i) */
void softmax_back(mg_store *s, const void *args, int32_t out) {
    const vec_args *a = args;
    int32_t n = a->n;
    const double *p = s->v.val + out, *g = s->v.grad + out;
    double gp = 0.0;
    for (int32_t i = 0; i < n; i++) gp += g[i] * p[i];
    for (int32_t i = 0; i < n; i++) s->v.grad[a->x + i] += p[i] * (g[i] - gp);
}

int32_t attention_fast(mg_store *s, const void *args) {
    const attention_args *a = args;
    int32_t r = attention_check(s, a->q, a->n, a->n_head, a->kv, a->kv + a->t, a->t);
    if (r) return r;
    int32_t q = a->q, n = a->n, n_head = a->n_head, t = a->t, hd = n / n_head;
    const int32_t *keys = a->kv, *values = a->kv + t;
    double c = attention_scale(hd);
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
void attention_back(mg_store *s, const void *args, int32_t out) {
    const attention_args *a = args;
    int32_t q = a->q, n = a->n, n_head = a->n_head, t = a->t, hd = n / n_head;
    const int32_t *keys = a->kv, *values = a->kv + t;
    double c = attention_scale(hd), *v = s->v.val, *grad = s->v.grad;
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

int32_t nll_fast(mg_store *s, const void *args) {
    const nll_args *a = args;
    int32_t r = nll_check(s, a->x, a->n, a->target);
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
void nll_back(mg_store *s, const void *args, int32_t out) {
    const nll_args *a = args;
    double g = s->v.grad[out];
    if (g == 0) return;
    for (int32_t i = 0; i < a->n; i++) s->v.grad[a->x + i] += g * s->v.val[out + 1 + i];
}

int32_t mean_fast(mg_store *s, const void *args) {
    const mean_args *a = args;
    for (int32_t i = 0; i < a->n; i++) CHECK_ID(a->x[i]);
    RESERVE(1, 0);
    double acc = 0.0;
    for (int32_t i = 0; i < a->n; i++) acc = acc + s->v.val[a->x[i]];
    int32_t out = fresh(s, 1);
    s->v.val[out] = acc * (1.0 / a->n);
    return out;
}
void mean_back(mg_store *s, const void *args, int32_t out) {
    const mean_args *a = args;
    double g = s->v.grad[out] * (1.0 / a->n);
    for (int32_t i = 0; i < a->n; i++) s->v.grad[a->x[i]] += g;
}
