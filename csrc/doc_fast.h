/* doc_fast.h: fast mode's whole-document kernel (doc_fast.c). Part of the
   cdef after microgpt.h: declarations only; the MG_E* codes are microgpt.h's.

   One call runs model.doc_loss's forward over all positions of a document,
   layer by layer (each weight read once per layer for every position); a
   second runs its backward, adding every parameter's gradient. Parameters are
   read at offsets into one flat array of nparams doubles: offs holds the first
   index of wte, wpe, lm_head, then per layer attn_wq, attn_wk, attn_wv,
   attn_wo, mlp_fc1, mlp_fc2 (3 + 6 n_layer offsets). The forward's values are
   the reference's, operation for operation; the backward reorders sums. */
typedef struct mg_doc mg_doc; /* opaque: the saved activations of one forward */

mg_doc *mg_doc_new(void);
void mg_doc_free(mg_doc *d);
const char *mg_doc_error(mg_doc *d); /* the last failed call's message */
int64_t mg_doc_doubles(mg_doc *d);   /* the doubles its buffers hold now (memory.py's estimate is checked on it) */

/* The mean next-token loss over the first n positions of tokens[0..ntok) into
   *loss; with loss NULL, the first n positions' logits only (n tokens are
   enough), for mg_doc_logits and no backward. MG_EARG for a bad size, offset
   or token, MG_ENOMEM, MG_EMATH for a non-finite value. */
int32_t mg_doc_forward(mg_doc *d, const double *params, int64_t nparams, const int64_t *offs, int32_t noffs,
                       int32_t vocab, int32_t n_embd, int32_t n_head, int32_t n_layer, int32_t block_size,
                       const int32_t *tokens, int32_t ntok, int32_t n, double *loss);
/* grads[i] += dloss * d(loss)/d(params[i]) for the last forward, once per
   forward (MG_EARG otherwise, or for nparams not the forward's): fast mode's
   gradients, or with _exact the reference's, bit for bit (doc_exact.c). */
int32_t mg_doc_backward(mg_doc *d, const double *params, double *grads, int64_t nparams, double dloss);
int32_t mg_doc_backward_exact(mg_doc *d, const double *params, double *grads, int64_t nparams, double dloss);
/* out[0..n) = position pos's logits from the last forward (n: the vocabulary) */
int32_t mg_doc_logits(mg_doc *d, int32_t pos, double *out, int32_t n);
