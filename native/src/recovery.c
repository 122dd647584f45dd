/* Recovery on open: list the segments, check headers and chaining, verify every record's CRC,
 * rebuild the in-memory offset index, and cut a torn tail off the last segment.
 *
 * What counts as a torn tail (repaired and reported) versus corruption (RL_ERR_CORRUPT):
 *   - only the last segment can have a torn tail; a bad byte in an earlier segment is corruption,
 *     because a segment is fdatasynced before the next one is created;
 *   - in the last segment, a record cut short by the end of the file, or a bad record (CRC,
 *     index, length) that no valid record follows, is a torn write: the file is truncated to
 *     the end of the last good record;
 *   - a bad record followed by a valid record is corruption in the middle of the log (the node
 *     must not silently drop entries that may be committed);
 *   - a last segment whose header is cut short or bad, with nothing but zeros after it, is a
 *     segment whose creation was torn: it is removed.
 *
 * With rl_options.discard_corrupt_suffix, corruption cuts the log at the first damage instead:
 * the later segments are removed newest first (each removal a suffix truncation), then the
 * damaged segment is truncated at its first bad record, or removed when its header is bad or it
 * does not chain onto the one before; the directory and the cut segment are flushed when fsync
 * is on.  Each file touched is reported, with the first index it lost.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

#define READ_CHUNK ((size_t)4 << 20)

/* A window over one file, refilled with pread when a request falls outside it. */
typedef struct reader {
    int fd;
    uint64_t fsize;
    uint8_t *buf;
    size_t cap;
    uint64_t base; /* file offset of buf[0] */
    size_t len;    /* valid bytes in buf */
} reader;

/* Points *p at file bytes [at, at + n), clipped to the end of the file (*avail says how many).
 * Returns 0, or -1 with errno set. */
static int reader_get(reader *r, uint64_t at, size_t n, const uint8_t **p, size_t *avail) {
    size_t want;
    if (at >= r->fsize) {
        *p = r->buf;
        *avail = 0;
        return 0;
    }
    if (n > r->fsize - at) n = (size_t)(r->fsize - at);
    if (!(at >= r->base && at + n <= r->base + r->len)) {
        if (n > r->cap) {
            uint8_t *b = (uint8_t *)realloc(r->buf, n);
            if (!b) {
                errno = ENOMEM;
                return -1;
            }
            r->buf = b;
            r->cap = n;
        }
        want = r->cap;
        if (want > r->fsize - at) want = (size_t)(r->fsize - at);
        if (rl__pread_all(r->fd, r->buf, want, at) < 0) return -1;
        r->base = at;
        r->len = want;
    }
    *p = r->buf + (at - r->base);
    *avail = n;
    return 0;
}

static int is_all_zero(reader *r, uint64_t from, int *zero) {
    *zero = 1;
    while (from < r->fsize) {
        const uint8_t *p;
        size_t n, i;
        if (reader_get(r, from, READ_CHUNK, &p, &n) < 0) return -1;
        for (i = 0; i < n; i++)
            if (p[i]) {
                *zero = 0;
                return 0;
            }
        from += n;
    }
    return 0;
}

/* Looks for a complete, CRC-valid record with an index in [expect, expect + span] starting after
 * `at`.  *found = its offset, or 0. */
static int find_valid_record_after(reader *r, uint64_t at, uint64_t expect, uint64_t *found) {
    uint64_t p, span = (r->fsize - at) / RL_RECORD_HEADER + 1;
    *found = 0;
    for (p = at + 1; p + RL_RECORD_HEADER <= r->fsize; p++) {
        const uint8_t *h;
        size_t n;
        uint64_t idx, need;
        uint32_t len;
        if (reader_get(r, p, RL_RECORD_HEADER, &h, &n) < 0) return -1;
        len = rl__get32(h + 4);
        idx = rl__get64(h + 8);
        if (len > RL_MAX_PAYLOAD || idx < expect || idx - expect > span) continue;
        need = RL_RECORD_HEADER + (uint64_t)len;
        if (p + need > r->fsize) continue;
        if (reader_get(r, p, (size_t)need, &h, &n) < 0) return -1;
        if (rl_crc32c(0, h + 4, (size_t)need - 4) == rl__get32(h)) {
            *found = p;
            return 0;
        }
    }
    return 0;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int list_segments(rl_log *log, uint64_t **firsts, size_t *n) {
    DIR *d = opendir(log->dir);
    struct dirent *ent;
    size_t cap = 16;
    uint64_t *v;
    *n = 0;
    *firsts = NULL;
    if (!d) return rl__fail(log, RL_ERR_IO, errno, "cannot list %s: %s", log->dir, strerror(errno));
    v = (uint64_t *)malloc(cap * sizeof *v);
    if (!v) {
        closedir(d);
        return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
    }
    errno = 0;
    while ((ent = readdir(d)) != NULL) {
        uint64_t first;
        if (!rl__parse_segment_name(ent->d_name, &first)) continue;
        if (*n == cap) {
            uint64_t *w = (uint64_t *)realloc(v, cap * 2 * sizeof *v);
            if (!w) {
                free(v);
                closedir(d);
                return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
            }
            v = w;
            cap *= 2;
        }
        v[(*n)++] = first;
    }
    closedir(d);
    qsort(v, *n, sizeof *v, cmp_u64);
    *firsts = v;
    return RL_OK;
}

int rl__add_repair(rl_log *log, const char *file, uint64_t offset, uint64_t bytes, int removed,
                   uint64_t first_lost, const char *reason) {
    rl_repair *r = (rl_repair *)realloc(log->repairs, (log->nrepairs + 1) * sizeof *r);
    if (!r) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
    log->repairs = r;
    r += log->nrepairs++;
    memset(r, 0, sizeof *r);
    rl__format(r->file, sizeof r->file, "%s", file);
    r->offset = offset;
    r->bytes = bytes;
    r->removed = removed;
    r->first_lost = first_lost;
    rl__format(r->reason, sizeof r->reason, "%s", reason);
    return RL_OK;
}

/* Discard mode: unlinks the segments firsts[from..n), newest first, reporting each as lost from
 * its first index on. */
static int remove_segments(rl_log *log, const uint64_t *firsts, size_t from, size_t n,
                           const char *damaged) {
    size_t j;
    for (j = n; j-- > from;) {
        char name[RL_SEGMENT_NAME_LEN + 1], reason[160];
        struct stat st;
        char *path;
        rl__segment_name(name, firsts[j]);
        path = rl__join(log->dir, name);
        if (!path) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
        if (stat(path, &st) < 0) st.st_size = 0;
        if (unlink(path) < 0) {
            int e = errno;
            rl__fail(log, RL_ERR_IO, e, "cannot remove %s: %s", path, strerror(e));
            free(path);
            return RL_ERR_IO;
        }
        free(path);
        rl__format(reason, sizeof reason, "discarded: follows the damage in %s", damaged);
        if (rl__add_repair(log, name, 0, (uint64_t)st.st_size, 1, firsts[j], reason) != RL_OK)
            return RL_ERR_NOMEM;
    }
    return RL_OK;
}

/* Closes and unlinks a whole segment being recovered (fsyncing the directory when fsync is on)
 * and reports it as removed, lost from first_lost on. */
static int remove_whole(rl_log *log, rl_segment *seg, const char *path, uint64_t size,
                        uint64_t first_lost, const char *what, const char *reason) {
    close(seg->fd);
    seg->fd = -1;
    if (unlink(path) < 0 || (log->fsync && rl__fsync(log->dirfd) < 0))
        return rl__fail(log, RL_ERR_IO, errno, "cannot remove %s %s: %s", what, path,
                        strerror(errno));
    return rl__add_repair(log, seg->name, 0, size, 1, first_lost, reason);
}

/* Scans the records of an opened segment whose header is good; fills seg's index.  In the last
 * segment a torn tail is truncated and reported.  Other damage fails with RL_ERR_CORRUPT, or in
 * discard mode returns RL_OK with seg->size at the bad record and its description in `bad`. */
static int scan_records(rl_log *log, rl_segment *seg, reader *r, const char *path, int is_last,
                        char *bad, size_t badlen) {
    uint64_t at = RL_SEGMENT_HEADER, expect = seg->first, need, found;
    const char *why = NULL;
    const uint8_t *p;
    size_t avail;
    while (at < r->fsize) {
        if (reader_get(r, at, RL_RECORD_HEADER, &p, &avail) < 0) goto io_error;
        if (avail >= RL_RECORD_HEADER) {
            uint32_t len = rl__get32(p + 4);
            size_t full = RL_RECORD_HEADER + (len > RL_MAX_PAYLOAD ? 0 : (size_t)len);
            if (reader_get(r, at, full, &p, &avail) < 0) goto io_error;
        }
        why = rl__check_record(p, avail, expect, &need);
        if (why) break;
        if (rl__segment_reserve(seg, 1) < 0) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
        seg->offsets[seg->count] = at;
        seg->terms[seg->count] = rl__get64(p + 16);
        seg->count++;
        expect++;
        at += need;
    }
    seg->size = at;
    if (at == r->fsize) return RL_OK;
    /* A bad record at `at`. */
    if (!is_last && log->discard_corrupt) {
        rl__format(bad, badlen, "%s at offset %llu (expected index %llu) in a segment that is not "
                   "the last", why, (unsigned long long)at, (unsigned long long)expect);
        return RL_OK;
    }
    if (!is_last)
        return rl__fail(log, RL_ERR_CORRUPT, 0,
                        "corrupt log: %s in %s at offset %llu (expected index %llu); "
                        "it is not the last segment, so this is not a torn write",
                        why, path, (unsigned long long)at, (unsigned long long)expect);
    if (find_valid_record_after(r, at, expect, &found) < 0) goto io_error;
    if (found && log->discard_corrupt) {
        rl__format(bad, badlen, "%s at offset %llu (expected index %llu), followed by a valid "
                   "record at offset %llu", why, (unsigned long long)at,
                   (unsigned long long)expect, (unsigned long long)found);
        return RL_OK;
    }
    if (found)
        return rl__fail(log, RL_ERR_CORRUPT, 0,
                        "corrupt log: %s in %s at offset %llu (expected index %llu), "
                        "followed by a valid record at offset %llu",
                        why, path, (unsigned long long)at, (unsigned long long)expect,
                        (unsigned long long)found);
    /* Torn tail: cut it off, durably, and report it. */
    if (rl__ftruncate(seg->fd, at) < 0 || (log->fsync && rl__fdatasync(seg->fd) < 0))
        goto io_error;
    {
        char reason[160];
        rl__format(reason, sizeof reason, "torn tail: %s (expected index %llu)", why,
                   (unsigned long long)expect);
        return rl__add_repair(log, seg->name, at, r->fsize - at, 0, expect, reason);
    }
io_error:
    return rl__fail(log, RL_ERR_IO, errno, "cannot read %s near offset %llu: %s", path,
                    (unsigned long long)at, strerror(errno));
}

int rl__recover(rl_log *log) {
    uint64_t *firsts = NULL, recreate_first = 1;
    size_t n = 0, i;
    reader r;
    int rc = list_segments(log, &firsts, &n);
    if (rc) return rc;
    memset(&r, 0, sizeof r);
    r.cap = READ_CHUNK;
    r.buf = (uint8_t *)malloc(r.cap);
    if (!r.buf) {
        free(firsts);
        return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
    }
    for (i = 0; i < n && rc == RL_OK; i++) {
        int is_last = i + 1 == n;
        rl_segment seg;
        struct stat st;
        const uint8_t *hdr;
        const char *why = NULL;
        size_t avail;
        uint64_t hfirst = 0, expect = firsts[i];
        char *path, bad[160];
        bad[0] = '\0';
        if (log->nsegs > 0) expect = log->segs[log->nsegs - 1].first + log->segs[log->nsegs - 1].count;
        memset(&seg, 0, sizeof seg);
        seg.first = firsts[i];
        rl__segment_name(seg.name, firsts[i]);
        path = rl__join(log->dir, seg.name);
        if (!path) {
            rc = rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
            break;
        }
        seg.fd = rl__open(path, O_RDWR, 0);
        if (seg.fd < 0 || fstat(seg.fd, &st) < 0) {
            rc = rl__fail(log, RL_ERR_IO, errno, "cannot open %s: %s", path, strerror(errno));
            if (seg.fd >= 0) close(seg.fd);
            free(path);
            break;
        }
        r.fd = seg.fd;
        r.fsize = (uint64_t)st.st_size;
        r.base = 0;
        r.len = 0;
        if (reader_get(&r, 0, RL_SEGMENT_HEADER, &hdr, &avail) < 0) {
            rc = rl__fail(log, RL_ERR_IO, errno, "cannot read %s: %s", path, strerror(errno));
        } else if (avail < RL_SEGMENT_HEADER) {
            why = "segment header cut short";
        } else {
            why = rl__check_segment_header(hdr, &hfirst);
        }
        if (rc == RL_OK && why) {
            int zero = 0;
            if (is_last && is_all_zero(&r, RL_SEGMENT_HEADER, &zero) < 0) {
                rc = rl__fail(log, RL_ERR_IO, errno, "cannot read %s: %s", path, strerror(errno));
            } else if (is_last && zero) {
                /* Its creation was torn: nothing was ever acknowledged from it. */
                char reason[160];
                rl__format(reason, sizeof reason, "torn segment creation: %s", why);
                rc = remove_whole(log, &seg, path, r.fsize, seg.first, "torn segment", reason);
                recreate_first = seg.first;
                free(path);
                break;
            } else if (log->discard_corrupt) {
                rl__format(bad, sizeof bad, "%s at offset 0", why);
            } else {
                rc = rl__fail(log, RL_ERR_CORRUPT, 0, "corrupt log: %s in %s at offset 0%s", why,
                              path, is_last ? " (records follow it)" : "");
            }
        }
        if (rc == RL_OK && !bad[0] && hfirst != seg.first) {
            if (log->discard_corrupt)
                rl__format(bad, sizeof bad, "header at offset 16 says first index %llu",
                           (unsigned long long)hfirst);
            else
                rc = rl__fail(log, RL_ERR_CORRUPT, 0,
                              "corrupt log: %s at offset 16 says first index %llu, its name says "
                              "%llu", path, (unsigned long long)hfirst,
                              (unsigned long long)seg.first);
        }
        if (rc == RL_OK && !bad[0] && log->nsegs > 0 && expect != seg.first) {
            rl_segment *prev = &log->segs[log->nsegs - 1];
            if (log->discard_corrupt)
                rl__format(bad, sizeof bad, "starts at index %llu but %s ends at index %llu",
                           (unsigned long long)seg.first, prev->name,
                           (unsigned long long)(expect - 1));
            else
                rc = rl__fail(log, RL_ERR_CORRUPT, 0,
                              "corrupt log: %s starts at index %llu but %s ends at index %llu "
                              "(a segment is missing or was cut short)",
                              path, (unsigned long long)seg.first, prev->name,
                              (unsigned long long)(expect - 1));
        }
        if (rc == RL_OK && bad[0]) {
            /* Discard mode, the whole segment is bad: it and everything after it go. */
            char reason[160];
            rl__format(reason, sizeof reason, "discarded: %s", bad);
            rc = remove_segments(log, firsts, i + 1, n, seg.name);
            if (rc == RL_OK)
                rc = remove_whole(log, &seg, path, r.fsize, expect, "damaged segment", reason);
            recreate_first = expect;
            rl__segment_free(&seg);
            free(path);
            break;
        }
        if (rc == RL_OK) rc = scan_records(log, &seg, &r, path, is_last, bad, sizeof bad);
        if (rc == RL_OK && bad[0]) {
            /* Discard mode, a bad record: everything after it goes, then it is cut off. */
            char reason[160];
            rc = remove_segments(log, firsts, i + 1, n, seg.name);
            if (rc == RL_OK && i + 1 < n && log->fsync && rl__fsync(log->dirfd) < 0)
                rc = rl__fail(log, RL_ERR_IO, errno, "fsync of %s failed: %s", log->dir,
                              strerror(errno));
            if (rc == RL_OK && (rl__ftruncate(seg.fd, seg.size) < 0 ||
                                (log->fsync && rl__fdatasync(seg.fd) < 0)))
                rc = rl__fail(log, RL_ERR_IO, errno, "cannot truncate %s at offset %llu: %s",
                              path, (unsigned long long)seg.size, strerror(errno));
            if (rc == RL_OK) {
                rl__format(reason, sizeof reason, "discarded: %s", bad);
                rc = rl__add_repair(log, seg.name, seg.size, r.fsize - seg.size, 0,
                                    seg.first + seg.count, reason);
            }
            n = i + 1; /* nothing after it is left to scan */
        }
        free(path);
        if (rc == RL_OK && log->nsegs == log->segcap) {
            size_t cap = log->segcap ? log->segcap * 2 : 8;
            rl_segment *s = (rl_segment *)realloc(log->segs, cap * sizeof *s);
            if (!s) {
                rc = rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
            } else {
                log->segs = s;
                log->segcap = cap;
            }
        }
        if (rc != RL_OK) {
            rl__segment_free(&seg);
            break;
        }
        log->segs[log->nsegs++] = seg;
    }
    free(r.buf);
    free(firsts);
    if (rc == RL_OK && log->nsegs == 0) rc = rl__create_segment(log, recreate_first);
    return rc;
}
