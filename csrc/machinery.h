/* machinery.h: what the files around the core share (the core, core.c,
   knows none of it): the store's other state, and each file's functions for
   the others. */
#ifndef MG_MACHINERY_H
#define MG_MACHINERY_H
#ifdef _MSC_VER /* say so rather than fail on the first pthread or vector type */
#error "microgpt_c's engine builds with GCC or clang: it uses pthreads, __thread and GCC's vector types"
#endif
#include <pthread.h>
#include "core.h"

struct machinery {
    int32_t handed;          /* a Value API handle was made in this generation */
    pthread_mutex_t lock;    /* held by the thread inside: Value API calls wait, others are refused */
    mg_store *prev, *next;   /* every live store, for fork */
};

/* A core op between these two (n0 = begin_op(s); r = op(...);
   end_op(s, name, n0, r)) is undone if its nodes hold a non-finite value or
   local gradient (overflow, say): an error naming the first such node. */
static inline int32_t begin_op(mg_store *s) {
    s->nonfinite = 0;
    return s->v.n;
}
static inline int32_t end_op(mg_store *s, const char *name, int32_t n0, int32_t r) {
    if (r < 0 || !s->nonfinite) return r;
    int32_t i = n0;
    while (i < s->v.n - 1 && isfinite(s->v.val[i]) && isfinite(s->local_grad[i][0]) && isfinite(s->local_grad[i][1])) i++;
    fail(s, MG_EMATH, "%s made a non-finite number (node %d: value %g, local gradients %g, %g)",
         name, i, s->v.val[i], s->local_grad[i][0], s->local_grad[i][1]);
    s->v.n = n0;
    return MG_EMATH;
}

/* value.c: a store's reset (a new generation of Value handles), for api.c */
int32_t reset(mg_store *s);
#endif
