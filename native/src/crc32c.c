/* CRC32C (Castagnoli, reflected polynomial 0x82F63B78): SSE4.2 when the CPU has it, otherwise a
 * slicing-by-8 table.  Both give identical results; tests compare them on random inputs. */
#define _POSIX_C_SOURCE 200809L

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define RL_HAVE_SSE42_BUILD 1
#else
#define RL_HAVE_SSE42_BUILD 0
#endif

static uint32_t table[8][256];
static int table_ready;   /* benign race: every thread computes the same table */
static int hw_state = -1; /* -1 unknown, 0 no, 1 yes */
static int force_table;

static void init_table(void) {
    uint32_t n, k, c;
    for (n = 0; n < 256; n++) {
        c = n;
        for (k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
        table[0][n] = c;
    }
    for (n = 0; n < 256; n++) {
        c = table[0][n];
        for (k = 1; k < 8; k++) {
            c = table[0][c & 0xFF] ^ (c >> 8);
            table[k][n] = c;
        }
    }
    table_ready = 1;
}

uint32_t rl_crc32c_table(uint32_t crc, const void *data, size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    if (!table_ready) init_table();
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
        len--;
    }
    while (len >= 8) {
        /* Little-endian load without alignment assumptions. */
        uint32_t lo = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                      (uint32_t)p[3] << 24;
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16 |
                      (uint32_t)p[7] << 24;
        lo ^= crc;
        crc = table[7][lo & 0xFF] ^ table[6][(lo >> 8) & 0xFF] ^ table[5][(lo >> 16) & 0xFF] ^
              table[4][lo >> 24] ^ table[3][hi & 0xFF] ^ table[2][(hi >> 8) & 0xFF] ^
              table[1][(hi >> 16) & 0xFF] ^ table[0][hi >> 24];
        p += 8;
        len -= 8;
    }
    while (len--) crc = table[0][(crc ^ *p++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

#if RL_HAVE_SSE42_BUILD
__attribute__((target("sse4.2"))) static uint32_t crc32c_sse42(uint32_t crc, const void *data,
                                                                size_t len) {
    const uint8_t *p = (const uint8_t *)data;
    crc = ~crc;
    while (len && ((uintptr_t)p & 7)) {
        crc = __builtin_ia32_crc32qi(crc, *p++);
        len--;
    }
#if defined(__x86_64__)
    {
        uint64_t c64 = crc;
        while (len >= 8) {
            uint64_t v;
            memcpy(&v, p, 8);
            c64 = __builtin_ia32_crc32di(c64, v);
            p += 8;
            len -= 8;
        }
        crc = (uint32_t)c64;
    }
#endif
    while (len >= 4) {
        uint32_t v;
        memcpy(&v, p, 4);
        crc = __builtin_ia32_crc32si(crc, v);
        p += 4;
        len -= 4;
    }
    while (len--) crc = __builtin_ia32_crc32qi(crc, *p++);
    return ~crc;
}
#endif

int rl_crc32c_hw_available(void) {
    if (hw_state < 0) {
#if RL_HAVE_SSE42_BUILD
        __builtin_cpu_init();
        hw_state = __builtin_cpu_supports("sse4.2") ? 1 : 0;
#else
        hw_state = 0;
#endif
    }
    return hw_state;
}

uint32_t rl_crc32c_hw(uint32_t crc, const void *data, size_t len) {
#if RL_HAVE_SSE42_BUILD
    if (rl_crc32c_hw_available()) return crc32c_sse42(crc, data, len);
#endif
    return rl_crc32c_table(crc, data, len);
}

void rl_crc32c_force_table(int on) { force_table = on != 0; }

uint32_t rl_crc32c(uint32_t crc, const void *data, size_t len) {
#if RL_HAVE_SSE42_BUILD
    if (!force_table && rl_crc32c_hw_available()) return crc32c_sse42(crc, data, len);
#endif
    return rl_crc32c_table(crc, data, len);
}
