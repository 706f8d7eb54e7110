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

/* api.c: a core op between these two is undone if it made a non-finite
   number (n0 = begin_op(s); r = op...; end_op(s, name, n0, r)) */
int32_t begin_op(mg_store *s);
int32_t end_op(mg_store *s, const char *name, int32_t n0, int32_t r);
int32_t reset(mg_store *s);
/* value.c */
int32_t new_generation(mg_store *s);
#endif
