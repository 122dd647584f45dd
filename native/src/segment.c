/* Segment files: names, headers, creation and the per-segment offset index. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

void rl__segment_name(char *out, uint64_t first) {
    snprintf(out, RL_SEGMENT_NAME_LEN + 1, "%020" PRIu64 ".seg", first);
}

int rl__parse_segment_name(const char *name, uint64_t *first) {
    uint64_t v = 0;
    int i;
    if (strlen(name) != RL_SEGMENT_NAME_LEN || strcmp(name + 20, ".seg") != 0) return 0;
    for (i = 0; i < 20; i++) {
        unsigned d;
        if (name[i] < '0' || name[i] > '9') return 0;
        d = (unsigned)(name[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return 0;
        v = v * 10 + d;
    }
    *first = v;
    return 1;
}

void rl__encode_fixed32(uint8_t *out, const char *magic, uint64_t value) {
    memcpy(out, magic, 8);
    rl__put32(out + 8, RL_FORMAT_VERSION);
    rl__put32(out + 12, RL_SEGMENT_HEADER);
    rl__put64(out + 16, value);
    rl__put32(out + 24, 0);
    rl__put32(out + 28, rl_crc32c(0, out, 28));
}

void rl__encode_segment_header(uint8_t *out, uint64_t first) {
    rl__encode_fixed32(out, RL_SEGMENT_MAGIC, first);
}

const char *rl__check_segment_header(const uint8_t *hdr, uint64_t *first) {
    if (memcmp(hdr, RL_SEGMENT_MAGIC, 8) != 0) return "bad segment magic";
    if (rl_crc32c(0, hdr, 28) != rl__get32(hdr + 28)) return "segment header CRC mismatch";
    if (rl__get32(hdr + 8) != RL_FORMAT_VERSION) return "unsupported segment format version";
    if (rl__get32(hdr + 12) != RL_SEGMENT_HEADER) return "unexpected segment header size";
    *first = rl__get64(hdr + 16);
    if (*first == 0) return "segment first index is 0";
    return NULL;
}

int rl__segment_reserve(rl_segment *seg, uint64_t extra) {
    uint64_t want = seg->count + extra, cap = seg->cap ? seg->cap : 1024;
    uint64_t *o, *t;
    if (want <= seg->cap) return 0;
    while (cap < want) cap *= 2;
    if (cap > SIZE_MAX / sizeof(uint64_t)) return -1;
    o = (uint64_t *)realloc(seg->offsets, (size_t)cap * sizeof(uint64_t));
    if (!o) return -1;
    seg->offsets = o;
    t = (uint64_t *)realloc(seg->terms, (size_t)cap * sizeof(uint64_t));
    if (!t) return -1;
    seg->terms = t;
    seg->cap = cap;
    return 0;
}

void rl__segment_free(rl_segment *seg) {
    if (seg->fd >= 0) close(seg->fd);
    seg->fd = -1;
    free(seg->offsets);
    free(seg->terms);
    seg->offsets = seg->terms = NULL;
    seg->cap = seg->count = 0;
}

/* Creates <first>.seg with its header and appends it to log->segs.  With fsync on, the header
 * and the directory entry are durable before this returns, so a crash never leaves a later
 * segment behind an earlier one that is still being written.  On failure nothing is left. */
int rl__create_segment(rl_log *log, uint64_t first) {
    uint8_t hdr[RL_SEGMENT_HEADER];
    rl_segment seg;
    char *path;
    int fd, e;
    if (log->nsegs == log->segcap) {
        size_t cap = log->segcap ? log->segcap * 2 : 8;
        rl_segment *s = (rl_segment *)realloc(log->segs, cap * sizeof *s);
        if (!s) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
        log->segs = s;
        log->segcap = cap;
    }
    memset(&seg, 0, sizeof seg);
    seg.fd = -1;
    seg.first = first;
    rl__segment_name(seg.name, first);
    path = rl__join(log->dir, seg.name);
    if (!path) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
    fd = rl__open(path, O_RDWR | O_CREAT | O_EXCL, 0644);
    if (fd < 0) {
        e = errno;
        rl__fail(log, RL_ERR_IO, e, "cannot create segment %s: %s", path, strerror(e));
        free(path);
        return RL_ERR_IO;
    }
    rl__encode_segment_header(hdr, first);
    if (rl__pwrite_all(fd, hdr, sizeof hdr, 0) < 0 || (log->fsync && rl__fdatasync(fd) < 0) ||
        (log->fsync && rl__fsync(log->dirfd) < 0)) {
        e = errno;
        close(fd);
        unlink(path);
        rl__fail(log, RL_ERR_IO, e, "cannot write the header of segment %s: %s", path, strerror(e));
        free(path);
        return RL_ERR_IO;
    }
    free(path);
    seg.fd = fd;
    seg.size = RL_SEGMENT_HEADER;
    log->segs[log->nsegs++] = seg;
    return RL_OK;
}
