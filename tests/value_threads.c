/* Four threads on one store through the Value API: build, backpropagate,
   read and write Values, one thread resetting the store and one compacting
   it. Built with -fsanitize=thread by tests/test_value_api.py: any data race
   is a report; every value read is checked against the C library's. */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include "microgpt.h"

static mg_store *S;

static void *work(void *arg) {
    long t = (long)arg, wrong = 0;
    for (int i = 0; i < 20000; i++) {
        double x = (i % 7) * 0.25 + t, y = 0.5 + (i % 3);
        mg_handle a = mg_value_leaf(S, x), b = mg_value_leaf(S, y);
        mg_handle c = mg_value_tanh(S, mg_value_add(S, mg_value_mul(S, a, b), a));
        mg_handle d = mg_value_mulc(S, c, 2.0);
        if (t == 3 && i % 500 == 0) mg_value_reset(S, NULL, 0, NULL);
        if (t == 2 && i % 700 == 0) { mg_handle keep[1] = {d}; mg_value_compact(S, keep, 1, -1); d = keep[0]; }
        if (d < 0 || mg_value_backward(S, d) < 0) continue; /* made stale by another thread's reset */
        double v = mg_value_get(S, d, 0);
        if (!mg_value_failed() && v != tanh(x * y + x) * 2.0) wrong++;
        mg_value_set(S, a, 1, 0.0);
    }
    return (void *)wrong;
}

int main(void) {
    S = mg_new(MG_EXACT);
    pthread_t th[4];
    long wrong = 0;
    for (long t = 0; t < 4; t++) pthread_create(&th[t], NULL, work, (void *)t);
    for (int t = 0; t < 4; t++) {
        void *r;
        pthread_join(th[t], &r);
        wrong += (long)r;
    }
    mg_free(S);
    printf("wrong values: %ld\n", wrong);
    return wrong != 0;
}
