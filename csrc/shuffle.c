/* shuffle.c: Python's random.shuffle, the same integer steps in C.

   CPython's Random is the Mersenne Twister MT19937: 624 32-bit words and a
   position (random.getstate()[1] holds them in that order). getrandbits(k),
   k <= 32, is the next 32-bit output shifted right by 32 - k; randbelow(n)
   draws getrandbits(n.bit_length()) until the draw is below n; shuffle swaps
   x[i] with x[randbelow(i + 1)] for i from len(x) - 1 down to 1. Integers
   only, so there is nothing to round: the same state gives the same
   permutation and the same state after. microgpt_c/shuffle.py checks that
   against random.shuffle before its first use. */
#include <stdint.h>
#include "microgpt.h"

enum { N = 624, M = 397 };

/* The generator's next 32-bit output: regenerate the words once all are
   used, then temper the next one (the algorithm's published definition). */
static uint32_t next32(uint32_t *mt) {
    if (mt[N] >= N) {
        for (int k = 0; k < N; k++) {
            uint32_t y = (mt[k] & 0x80000000u) | (mt[(k + 1) % N] & 0x7fffffffu);
            mt[k] = mt[(k + M) % N] ^ (y >> 1) ^ (y & 1 ? 0x9908b0dfu : 0);
        }
        mt[N] = 0;
    }
    uint32_t y = mt[mt[N]++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

int32_t mg_shuffle(uint32_t *mt, int32_t *perm, int32_t n) {
    if (!mt || n < 0 || (n && !perm) || mt[N] > N) return MG_EARG;
    for (int32_t i = 0; i < n; i++) perm[i] = i;
    for (int32_t i = n - 1; i >= 1; i--) {
        uint32_t below = (uint32_t)i + 1, k = 0, r;
        while (k < 32 && below >> k) k++; /* below.bit_length() */
        do r = next32(mt) >> (32 - k); while (r >= below);
        int32_t t = perm[i];
        perm[i] = perm[r];
        perm[r] = t;
    }
    return 0;
}
