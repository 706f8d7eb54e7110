/* microgpt.h: the C engine's interface. cffi reads this file as its cdef, so
   it holds declarations and integer #defines only.

   Every node is one float: a value and a gradient, and, as the reference's
   Value, up to two children with the local gradient toward each (docs/graph.md
   defines the nodes each op makes). Node ids are int32. Functions that make
   nodes return the id of their first output (vector ops put their outputs on
   consecutive ids) or a negative MG_E* code, with a message in the view's
   `err`. */

#define MG_EXACT 0   /* the reference's numbers, bit for bit: its graph node for node, or its kernels */
#define MG_FAST 1    /* training's kernels sum in their own order, Adam fused; other graphs as exact */

#define MG_EARG -1   /* bad argument (ValueError) */
#define MG_ENOMEM -2 /* allocation failed (MemoryError) */
#define MG_EMATH -3  /* a math domain error or a non-finite value (ArithmeticError) */
#define MG_EBUSY -4  /* another thread is inside this store (RuntimeError) */

typedef struct mg_store mg_store; /* opaque */

/* What a store shows its user; kept current by every call. */
typedef struct {
    double *val, *grad;      /* node i: value and gradient (valid until the store grows) */
    int32_t n;               /* nodes in use */
    int32_t nparams;         /* the parameters are nodes [0, nparams), kept by reset */
    uint32_t generation;     /* the Value API's handles carry it: 1 .. 2**22-1, never reused */
    char err[200];           /* the last error's message */
} mg_view;

/* node store */
mg_store *mg_new(int32_t mode);
void mg_free(mg_store *s);
mg_view *mg_view_of(mg_store *s);
int32_t mg_params(mg_store *s, const double *v, int32_t n);
int32_t mg_reset(mg_store *s);
int32_t mg_tokens(mg_store *s, const int32_t *tok, int32_t n);

/* scalar ops */
int32_t mg_leaf(mg_store *s, double v);
int32_t mg_add(mg_store *s, int32_t a, int32_t b);
int32_t mg_mul(mg_store *s, int32_t a, int32_t b);
int32_t mg_pow(mg_store *s, int32_t a, double p);
int32_t mg_log(mg_store *s, int32_t a);
int32_t mg_exp(mg_store *s, int32_t a);
int32_t mg_relu(mg_store *s, int32_t a);
int32_t mg_tanh(mg_store *s, int32_t a);

/* vector ops: x is a vector of n consecutive nodes starting at id x; a matrix
   w of nout x nin is nout*nin consecutive nodes, row-major; tok and target are
   indices into the tokens set by mg_tokens */
int32_t mg_embed(mg_store *s, int32_t wte, int32_t ntok, int32_t wpe, int32_t npos, int32_t n,
                 int32_t tok, int32_t pos);
int32_t mg_vadd(mg_store *s, int32_t a, int32_t b, int32_t n);
int32_t mg_vrelu(mg_store *s, int32_t x, int32_t n);
int32_t mg_scale(mg_store *s, int32_t x, int32_t n, double c);
int32_t mg_rmsnorm(mg_store *s, int32_t x, int32_t n);
int32_t mg_linear(mg_store *s, int32_t x, int32_t nin, int32_t w, int32_t nout);
int32_t mg_softmax(mg_store *s, int32_t x, int32_t n);
int32_t mg_attention(mg_store *s, int32_t q, int32_t n, int32_t n_head,
                     const int32_t *keys, const int32_t *values, int32_t t);
int32_t mg_nll(mg_store *s, int32_t logits, int32_t n, int32_t target);
int32_t mg_mean(mg_store *s, const int32_t *x, int32_t n);

/* backward: gradient of root is 1, accumulated into every node below it */
int32_t mg_backward(mg_store *s, int32_t root);

/* Adam: one step of the reference's update over n parameters, in place, each
   operation as the reference orders it (lr_t = lr * (1 - step / num_steps),
   bc1 = 1 - b1 ** (step + 1), bc2 = 1 - b2 ** (step + 1), from the caller):
     m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g**2
     p -= lr_t * (m / bc1) / ((v / bc2) ** 0.5 + eps); g = 0
   ** is the C library's pow, taken the cheap way (x*x, sqrt) where that
   provably gives pow's bits (adam.c), which needs mg_adam_cheap(). Returns how
   many of the 2n powers called pow, or MG_EARG with nothing changed (a NULL or
   overlapping array, n < 0, bc1 or bc2 zero, eps not > 0). With mismatch not
   NULL (the verifying mode) every power is also taken with pow, which the step
   then uses, and *mismatch is the number where the cheap way differed. With
   exact 0 (fast mode) the powers are simply x*x and sqrt(x), as numpy's **
   takes them, the bias corrections are folded into multipliers and, on a CPU
   with FMA, multiply-adds are fused: pow is never called, and *mismatch is 0. */
int64_t mg_adam(double *p, double *g, double *m, double *v, int64_t n, double lr_t,
                double b1, double b2, double bc1, double bc2, double eps, int32_t exact, int64_t *mismatch);
/* 1 if the cheap powers are on: glibc >= 2.28 on x86-64/AArch64, fused fma */
int32_t mg_adam_cheap(void);

/* Numbers in and out, under the store's lock: mg_read copies n values (grad
   0) or gradients (grad 1) of the nodes from `first` on; mg_write_params sets
   all the parameters' values or gradients (n must be their count; finite
   numbers only); mg_adam_step is mg_adam on the store's parameters, in the
   store's mode, with moments m and v (nm and nv: the parameter count). */
int32_t mg_read(mg_store *s, int32_t first, int32_t n, int32_t grad, double *out);
int32_t mg_write_params(mg_store *s, const double *in, int32_t n, int32_t grad);
int64_t mg_adam_step(mg_store *s, double *m, int64_t nm, double *v, int64_t nv, double lr_t, double b1,
                     double b2, double bc1, double bc2, double eps, int64_t *mismatch);

/* random.shuffle of n items: perm becomes the permutation (item perm[i]
   ends at i) that Python's Random with Mersenne Twister state mt would make,
   and mt the state after: mt is random.getstate()[1], 624 words and the
   position (shuffle.c). MG_EARG for a NULL array, n < 0 or a bad position. */
int32_t mg_shuffle(uint32_t *mt, int32_t *perm, int32_t n);

/* The Value API (microgpt_c.Value): a Value is a handle, not a node id (a
   handle made before a reset is refused as stale). Each call waits for the
   store's lock: threads may share a store (every other mg_ call on a store
   is refused with MG_EBUSY while another thread is inside it). Ops return the new Value's handle or a
   negative MG_E* code, whose message mg_value_error() gives (per thread).
   A handle is an integer below 2**53 carried in a double: cffi passes a
   Python float in a few ns, an int of more than 30 bits through a slow path
   (~20 ns each way, measured). */
typedef double mg_handle;
mg_handle mg_value_leaf(mg_store *s, double v);
mg_handle mg_value_add(mg_store *s, mg_handle a, mg_handle b);
mg_handle mg_value_mul(mg_store *s, mg_handle a, mg_handle b);
mg_handle mg_value_addc(mg_store *s, mg_handle a, double c); /* a + Value(c): the leaf and the sum */
mg_handle mg_value_mulc(mg_store *s, mg_handle a, double c); /* a * Value(c) */
mg_handle mg_value_pow(mg_store *s, mg_handle a, double p);
mg_handle mg_value_log(mg_store *s, mg_handle a);
mg_handle mg_value_exp(mg_store *s, mg_handle a);
mg_handle mg_value_relu(mg_store *s, mg_handle a);
mg_handle mg_value_tanh(mg_store *s, mg_handle a);
/* a's value (grad 0) or gradient (grad 1); NaN on error (a gradient may be
   NaN itself: mg_value_failed() tells) */
double mg_value_get(mg_store *s, mg_handle a, int32_t grad);
int32_t mg_value_set(mg_store *s, mg_handle a, int32_t grad, double v); /* finite v only */
int32_t mg_value_backward(mg_store *s, mg_handle root);
/* micrograd's _backward: a's gradient times each local gradient, added to
   its children's gradients (one level; a leaf has none) */
int32_t mg_value_back_one(mg_store *s, mg_handle a);
/* drop every node but the parameters and the n Values keep[], which become
   leaves (value and gradient kept, graph dropped) with new handles kept[i] */
int32_t mg_value_reset(mg_store *s, const mg_handle *keep, int32_t n, mg_handle *kept);
/* drop every node but the parameters and those the n Values handles[] reach,
   graphs kept whole; handles[i] becomes the new handle (a stale one stays).
   Exact mode. Only if the store still has `nodes`
   nodes (the count when the Values were listed; -1: any): returns 1 if it
   compacted, 0 if a node was made since (a Value another thread holds may
   not be listed). */
int32_t mg_value_compact(mg_store *s, mg_handle *handles, int32_t n, int32_t nodes);
const char *mg_value_error(void);  /* this thread's last Value API error */
int32_t mg_value_failed(void);     /* this thread's last Value API call's code: 0 or MG_E* */
