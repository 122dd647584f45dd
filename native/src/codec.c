/* The record format of engine/codec.py: check, encode and split batches of records. */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <string.h>

#include "internal.h"

const char *rl__check_record(const uint8_t *data, size_t avail, uint64_t expect, uint64_t *need) {
    uint32_t length;
    *need = 0;
    if (avail < RL_RECORD_HEADER) return "record header cut short";
    length = rl__get32(data + 4);
    if (length > RL_MAX_PAYLOAD) return "record length over the 64 MiB limit";
    *need = RL_RECORD_HEADER + (uint64_t)length;
    if (avail < *need) return "record cut short";
    if (expect != 0 && rl__get64(data + 8) != expect) return "record has an unexpected index";
    if (rl_crc32c(0, data + 4, (size_t)*need - 4) != rl__get32(data)) return "record CRC mismatch";
    return NULL;
}

size_t rl_encode_parts(size_t n, const uint64_t *indexes, const uint64_t *terms,
                       const uint8_t *kinds, const uint32_t *lens, const uint8_t *payload,
                       size_t payload_len, uint8_t *out, size_t cap) {
    size_t k, src = 0, dst = 0;
    if (n == 0 || cap / RL_RECORD_HEADER < n || cap - RL_RECORD_HEADER * n < payload_len) return 0;
    for (k = 0; k < n; k++) {
        uint32_t len = lens[k];
        if (len > RL_MAX_PAYLOAD || payload_len - src < len) return 0;
        rl__put32(out + dst + 4, len);
        rl__put64(out + dst + 8, indexes[k]);
        rl__put64(out + dst + 16, terms[k]);
        out[dst + 24] = kinds[k];
        if (len) memcpy(out + dst + RL_RECORD_HEADER, payload + src, len);
        rl__put32(out + dst, rl_crc32c(0, out + dst + 4, RL_RECORD_HEADER - 4 + len));
        src += len;
        dst += RL_RECORD_HEADER + len;
    }
    if (src != payload_len) return 0;
    return dst;
}

int rl_batch_scan(const uint8_t *data, size_t len, size_t *count, size_t *bad_offset, char *err,
                  size_t errlen) {
    size_t off = 0, n = 0;
    *count = 0;
    *bad_offset = 0;
    while (off < len) {
        uint64_t need;
        const char *why = rl__check_record(data + off, len - off, 0, &need);
        if (why) {
            *bad_offset = off;
            *count = n;
            if (need)
                rl__format(err, errlen, "%s at offset %zu of the batch (index %llu)", why, off,
                           (unsigned long long)rl__get64(data + off + 8));
            else
                rl__format(err, errlen, "%s at offset %zu of the batch", why, off);
            return RL_ERR_BATCH;
        }
        off += (size_t)need;
        n++;
    }
    *count = n;
    return RL_OK;
}

void rl_batch_fields(const uint8_t *data, size_t len, size_t n, uint64_t *indexes, uint64_t *terms,
                     uint8_t *kinds, uint64_t *payload_offsets, uint32_t *payload_lens) {
    size_t off = 0, k;
    for (k = 0; k < n && off + RL_RECORD_HEADER <= len; k++) {
        uint32_t plen = rl__get32(data + off + 4);
        if (indexes) indexes[k] = rl__get64(data + off + 8);
        if (terms) terms[k] = rl__get64(data + off + 16);
        if (kinds) kinds[k] = data[off + 24];
        if (payload_offsets) payload_offsets[k] = off + RL_RECORD_HEADER;
        if (payload_lens) payload_lens[k] = plen;
        off += RL_RECORD_HEADER + plen;
    }
}
