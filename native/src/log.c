/* The log handle: open/close, append, sync (and the sync mark), read, term lookup, suffix
 * truncation, prefix compaction.  See raftlog.h for the contract and the durability rules. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "internal.h"

/* ---- sync mark ------------------------------------------------------------------------- */

void rl__encode_syncmark(uint8_t *out, uint64_t index) {
    rl__encode_fixed32(out, RL_SYNCMARK_MAGIC, index);
}

const char *rl__check_syncmark(const uint8_t *rec, uint64_t *index) {
    uint8_t want[RL_SYNCMARK_SIZE];
    rl__encode_syncmark(want, rl__get64(rec + 16));
    if (memcmp(rec, want, sizeof want) == 0) {
        *index = rl__get64(rec + 16);
        return NULL;
    }
    if (memcmp(rec, RL_SYNCMARK_MAGIC, 8) != 0) return "bad magic";
    if (rl_crc32c(0, rec, 28) != rl__get32(rec + 28)) return "CRC mismatch";
    return "unsupported version";
}

int rl__mark_open(rl_log *log) {
    uint8_t rec[RL_SYNCMARK_SIZE];
    struct stat st;
    const char *why = NULL;
    uint64_t index = 0;
    char *path = rl__join(log->dir, RL_SYNCMARK_FILE);
    if (!path) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
    log->markfd = rl__open(path, O_RDWR | O_CREAT, 0644);
    if (log->markfd < 0 || fstat(log->markfd, &st) < 0) {
        int e = errno;
        rl__fail(log, RL_ERR_IO, e, "cannot open the sync mark %s: %s", path, strerror(e));
        free(path);
        return RL_ERR_IO;
    }
    if (st.st_size == 0) {
        why = NULL; /* never written (or made by an older version): no record */
    } else if (st.st_size != (off_t)RL_SYNCMARK_SIZE) {
        why = "wrong size";
    } else if (rl__pread_all(log->markfd, rec, sizeof rec, 0) < 0) {
        int e = errno;
        rl__fail(log, RL_ERR_IO, e, "cannot read the sync mark %s: %s", path, strerror(e));
        free(path);
        return RL_ERR_IO;
    } else {
        why = rl__check_syncmark(rec, &index);
    }
    free(path);
    if (why) {
        /* Never an error: an unknown mark claims nothing.  Cut it, so that it reads as 0 until
         * the next sync writes it whole. */
        char reason[160];
        index = 0;
        if (rl__ftruncate(log->markfd, 0) < 0) log->mark_unknown = 1;
        rl__format(reason, sizeof reason, "unreadable sync mark (%s): taken as no record", why);
        if (rl__add_repair(log, RL_SYNCMARK_FILE, 0, (uint64_t)st.st_size, 0, 0, reason) != RL_OK)
            return RL_ERR_NOMEM;
    }
    log->mark = log->mark_at_open = index;
    return RL_OK;
}

/* Writes `index` as the sync mark (no flush).  Returns 0, or -1 with errno set (the mark on disk
 * is then unknown: the old value, the new one, or unreadable). */
static int mark_write(rl_log *log, uint64_t index) {
    uint8_t rec[RL_SYNCMARK_SIZE];
    rl__encode_syncmark(rec, index);
    if (rl__pwrite_all(log->markfd, rec, sizeof rec, 0) < 0) {
        log->mark_unknown = 1;
        return -1;
    }
    log->mark = index;
    log->mark_unknown = 0;
    log->mark_unflushed = 1;
    return 0;
}

/* Before removing entries >= index: a mark above index - 1 is lowered to it, flushed when fsync
 * is on, so that the mark on the device never names an entry that is gone. */
static int mark_lower(rl_log *log, uint64_t index) {
    uint64_t want = index - 1;
    if (!log->mark_unknown && log->mark <= want) return RL_OK;
    if (mark_write(log, want) < 0)
        return rl__fail(log, RL_ERR_IO, errno, "cannot lower the sync mark of %s to %llu: %s",
                        log->dir, (unsigned long long)want, strerror(errno));
    if (log->fsync) {
        if (rl__fdatasync(log->markfd) < 0) {
            int e = errno;
            log->mark_unknown = 1;
            log->poisoned = 1;
            return rl__fail(log, RL_ERR_IO, e, "fdatasync of %s/%s failed: %s; the log must be "
                            "reopened", log->dir, RL_SYNCMARK_FILE, strerror(e));
        }
        log->mark_unflushed = 0;
    }
    return RL_OK;
}

uint64_t rl_synced_index_at_open(const rl_log *log) { return log->mark_at_open; }

/* ---- open / close ---------------------------------------------------------------------- */

int rl_open(const char *dir, const rl_options *opts, rl_log **out, char *err, size_t errlen) {
    rl_log *log;
    int rc;
    *out = NULL;
    if (!dir || !*dir) {
        rl__format(err, errlen, "no log directory given");
        return RL_ERR_INVAL;
    }
    log = (rl_log *)calloc(1, sizeof *log);
    if (!log) {
        rl__format(err, errlen, "out of memory");
        return RL_ERR_NOMEM;
    }
    log->dirfd = -1;
    log->markfd = -1;
    log->fsync = opts ? opts->fsync != 0 : 1;
    log->discard_corrupt = opts ? opts->discard_corrupt_suffix != 0 : 0;
    log->segment_size = opts && opts->segment_size ? opts->segment_size : RL_DEFAULT_SEGMENT;
    if (log->segment_size < RL_SEGMENT_HEADER + RL_RECORD_HEADER) log->segment_size = RL_SEGMENT_HEADER + RL_RECORD_HEADER;
    if (log->segment_size > RL_MAX_SEGMENT) log->segment_size = RL_MAX_SEGMENT;
    log->dir = (char *)malloc(strlen(dir) + 1);
    if (!log->dir) {
        free(log);
        rl__format(err, errlen, "out of memory");
        return RL_ERR_NOMEM;
    }
    strcpy(log->dir, dir);
    log->dirfd = rl__open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (log->dirfd < 0) {
        rc = rl__fail(log, RL_ERR_IO, errno, "cannot open log directory %s: %s", dir, strerror(errno));
    } else {
        rc = rl__recover(log);
        if (rc == RL_OK) rc = rl__mark_open(log);
    }
    if (rc != RL_OK) {
        rl__format(err, errlen, "%s", log->err);
        rl_close(log);
        return rc;
    }
    /* What a crashed process left in the page cache may not be on the device: the next sync
     * flushes the last segment whatever this handle writes (earlier segments were flushed
     * before the next one was created). */
    log->segs[log->nsegs - 1].dirty = log->fsync;
    *out = log;
    return RL_OK;
}

int rl_close(rl_log *log) {
    size_t i;
    int rc = RL_OK;
    if (!log) return RL_OK;
    if (log->markfd >= 0) {
        if (log->fsync && log->mark_unflushed && !log->poisoned && rl__fdatasync(log->markfd) < 0)
            rc = RL_ERR_IO;
        if (close(log->markfd) < 0) rc = RL_ERR_IO;
    }
    for (i = 0; i < log->nsegs; i++) {
        if (log->segs[i].fd >= 0 && close(log->segs[i].fd) < 0) rc = RL_ERR_IO;
        log->segs[i].fd = -1;
        rl__segment_free(&log->segs[i]);
    }
    if (log->dirfd >= 0) close(log->dirfd);
    free(log->segs);
    free(log->scratch);
    free(log->repairs);
    free(log->dir);
    free(log);
    return rc;
}

const char *rl_errmsg(const rl_log *log) { return log ? log->err : "no log"; }
int rl_errno(const rl_log *log) { return log ? log->last_errno : 0; }

uint64_t rl_first_index(const rl_log *log) { return log->segs[0].first; }

uint64_t rl_last_index(const rl_log *log) {
    const rl_segment *s = &log->segs[log->nsegs - 1];
    return s->first + s->count - 1;
}

size_t rl_segment_count(const rl_log *log) { return log->nsegs; }
size_t rl_recovery_count(const rl_log *log) { return log->nrepairs; }

int rl_recovery_get(const rl_log *log, size_t i, rl_repair *out) {
    if (i >= log->nrepairs) return RL_ERR_RANGE;
    *out = log->repairs[i];
    return RL_OK;
}

/* Index of the segment holding `index` (which must be stored). */
static size_t find_segment(const rl_log *log, uint64_t index) {
    size_t lo = 0, hi = log->nsegs;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (log->segs[mid].first <= index)
            lo = mid;
        else
            hi = mid;
    }
    return lo;
}

static int check_writable(rl_log *log) {
    if (log->poisoned)
        return rl__fail(log, RL_ERR_STATE, log->last_errno,
                        "log %s is unusable after a failed fsync; reopen it to recover what is "
                        "on disk",
                        log->dir);
    return RL_OK;
}

static int poison(rl_log *log, int e, const char *what, const char *name) {
    log->poisoned = 1;
    return rl__fail(log, RL_ERR_IO, e, "%s of %s/%s failed: %s; the log must be reopened", what,
                    log->dir, name, strerror(e));
}

/* Removes the last segment file (not the only one).  With fsync on, the directory is synced. */
static int drop_last_segment(rl_log *log) {
    rl_segment *s = &log->segs[log->nsegs - 1];
    char *path = rl__join(log->dir, s->name);
    int e;
    if (!path) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
    if (unlink(path) < 0) {
        e = errno;
        rl__fail(log, RL_ERR_IO, e, "cannot remove %s: %s", path, strerror(e));
        free(path);
        return RL_ERR_IO;
    }
    free(path);
    rl__segment_free(s);
    log->nsegs--;
    return RL_OK;
}

int rl_truncate_suffix(rl_log *log, uint64_t index) {
    rl_segment *s;
    int rc = check_writable(log), dir_changed = 0;
    uint64_t keep, newsize;
    if (rc) return rc;
    if (index < rl_first_index(log)) index = rl_first_index(log);
    if ((rc = mark_lower(log, index)) != RL_OK) return rc; /* even past the end */
    if (index > rl_last_index(log)) return RL_OK;
    /* Newest first, so that the files on disk always hold a prefix of the log. */
    while (log->nsegs > 1 && log->segs[log->nsegs - 1].first >= index) {
        if ((rc = drop_last_segment(log)) != RL_OK) break;
        dir_changed = 1;
    }
    if (rc == RL_OK) {
        s = &log->segs[log->nsegs - 1];
        keep = index - s->first;
        if (keep < s->count) {
            newsize = s->offsets[keep];
            if (rl__ftruncate(s->fd, newsize) < 0) {
                rc = rl__fail(log, RL_ERR_IO, errno, "cannot truncate %s/%s at offset %llu: %s",
                              log->dir, s->name, (unsigned long long)newsize, strerror(errno));
            } else {
                s->count = keep;
                s->size = newsize;
                s->dirty = 1;
            }
        }
    }
    /* Make the cut durable before anything is appended after it: a crash must never bring the
     * old suffix back behind newer entries. */
    if (log->fsync) {
        s = &log->segs[log->nsegs - 1];
        if (dir_changed && rl__fsync(log->dirfd) < 0) return poison(log, errno, "fsync", ".");
        if (s->dirty && rl__fdatasync(s->fd) < 0) return poison(log, errno, "fdatasync", s->name);
        s->dirty = 0;
    }
    return rc;
}

int rl_compact_prefix(rl_log *log, uint64_t index) {
    size_t drop = 0, i;
    uint64_t last = rl_last_index(log), bound;
    int rc = check_writable(log);
    if (rc) return rc;
    /* A segment may go when the next one starts at or before index + 1, and at or before the
     * last index, so that the segment holding the last entry stays (and the last one always
     * does: a recovered or failed roll can leave it empty). */
    bound = index < last ? index + 1 : last;
    while (drop + 1 < log->nsegs && log->segs[drop + 1].first <= bound) drop++;
    for (i = 0; i < drop; i++) {
        char *path = rl__join(log->dir, log->segs[i].name);
        if (!path) {
            rc = rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
            break;
        }
        if (unlink(path) < 0) {
            rc = rl__fail(log, RL_ERR_IO, errno, "cannot remove %s: %s", path, strerror(errno));
            free(path);
            break;
        }
        free(path);
        rl__segment_free(&log->segs[i]);
    }
    if (i > 0) {
        memmove(log->segs, log->segs + i, (log->nsegs - i) * sizeof *log->segs);
        log->nsegs -= i;
        if (log->fsync && rl__fsync(log->dirfd) < 0) return poison(log, errno, "fsync", ".");
    }
    return rc;
}

int rl_reset(rl_log *log, uint64_t next_index) {
    rl_segment *s;
    char name[RL_SEGMENT_NAME_LEN + 1];
    char *from = NULL, *to = NULL;
    uint8_t hdr[RL_SEGMENT_HEADER];
    int rc = check_writable(log), dir_changed = 0, e;
    if (rc) return rc;
    if (next_index == 0) return rl__fail(log, RL_ERR_INVAL, 0, "log indexes start at 1, cannot reset to 0");
    s = &log->segs[0];
    if (log->nsegs == 1 && s->first == next_index && s->count == 0 && s->size == RL_SEGMENT_HEADER)
        return RL_OK; /* already there */
    /* The sync mark becomes next_index - 1: lowered before anything goes, raised at the end. */
    if ((rc = mark_lower(log, next_index)) != RL_OK) return rc;
    /* 1. Every segment but the oldest, newest first: each step is a suffix truncation. */
    while (log->nsegs > 1) {
        if ((rc = drop_last_segment(log)) != RL_OK) return rc;
        dir_changed = 1;
    }
    if (log->fsync && dir_changed && rl__fsync(log->dirfd) < 0) return poison(log, errno, "fsync", ".");
    s = &log->segs[0];
    rl__segment_name(name, next_index);
    if (s->first != next_index) {
        from = rl__join(log->dir, s->name);
        to = rl__join(log->dir, name);
        if (!from || !to) {
            free(from);
            free(to);
            return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
        }
    }
    /* 2. Cut the oldest to nothing: a zero-length only segment is a torn creation to recovery,
     * which recreates it empty at the first index its name says. */
    if (rl__ftruncate(s->fd, 0) < 0) {
        e = errno;
        free(from);
        free(to);
        return rl__fail(log, RL_ERR_IO, e, "cannot truncate %s/%s to reset the log: %s", log->dir,
                        s->name, strerror(e));
    }
    s->count = 0;
    s->size = 0;
    s->dirty = 0;
    if (log->fsync && rl__fdatasync(s->fd) < 0) {
        e = errno;
        free(from);
        free(to);
        return poison(log, e, "fdatasync", s->name);
    }
    /* 3. Rename it to next_index's name (durable before the header names the new index). */
    if (from) {
        if (rl__rename(from, to) < 0) {
            e = errno;
            log->poisoned = 1;
            rl__fail(log, RL_ERR_IO, e, "cannot rename %s to %s to reset the log: %s; the log must "
                     "be reopened", from, to, strerror(e));
            free(from);
            free(to);
            return RL_ERR_IO;
        }
        free(from);
        free(to);
        memcpy(s->name, name, sizeof name);
        s->first = next_index;
        if (log->fsync && rl__fsync(log->dirfd) < 0) return poison(log, errno, "fsync", ".");
    }
    /* 4. The header. */
    rl__encode_segment_header(hdr, next_index);
    if (rl__pwrite_all(s->fd, hdr, sizeof hdr, 0) < 0) return poison(log, errno, "header write", s->name);
    s->size = RL_SEGMENT_HEADER;
    if (log->fsync && rl__fdatasync(s->fd) < 0) return poison(log, errno, "fdatasync", s->name);
    /* Raising needs no flush: a lost raise leaves a lower mark, which claims less. */
    if (log->mark_unknown || log->mark != next_index - 1) (void)mark_write(log, next_index - 1);
    return RL_OK;
}

/* The common tail of both append paths: `data` holds n checked records, indexes start..start+n-1. */
static int append_checked(rl_log *log, const uint8_t *data, size_t len, uint64_t start, size_t n) {
    rl_segment *s;
    uint64_t first = rl_first_index(log), last = rl_last_index(log), off;
    size_t k;
    int rc;
    if (start > last + 1)
        return rl__fail(log, RL_ERR_INVAL, 0, "append at index %llu leaves a gap after last index %llu",
                        (unsigned long long)start, (unsigned long long)last);
    if (start < first)
        return rl__fail(log, RL_ERR_INVAL, 0, "append at index %llu is before first index %llu",
                        (unsigned long long)start, (unsigned long long)first);
    if (start <= last && (rc = rl_truncate_suffix(log, start)) != RL_OK) return rc;
    s = &log->segs[log->nsegs - 1];
    if (s->count > 0 && s->size + len > log->segment_size) {
        /* Roll: the full segment is made durable before the next one exists (see recovery.c). */
        if (log->fsync && s->dirty) {
            if (rl__fdatasync(s->fd) < 0) return poison(log, errno, "fdatasync", s->name);
            s->dirty = 0;
        }
        if ((rc = rl__create_segment(log, start)) != RL_OK) return rc;
        s = &log->segs[log->nsegs - 1];
    }
    if (rl__segment_reserve(s, n) < 0) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
    if (rl__pwrite_all(s->fd, data, len, s->size) < 0) {
        int e = errno;
        /* Cut off whatever part of the batch reached the file, so the log is as it was. */
        if (rl__ftruncate(s->fd, s->size) < 0) return poison(log, e, "append (and the undo)", s->name);
        return rl__fail(log, RL_ERR_IO, e, "cannot append %zu bytes to %s/%s at offset %llu: %s",
                        len, log->dir, s->name, (unsigned long long)s->size, strerror(e));
    }
    off = 0;
    for (k = 0; k < n; k++) {
        s->offsets[s->count + k] = s->size + off;
        s->terms[s->count + k] = rl__get64(data + off + 16);
        off += RL_RECORD_HEADER + rl__get32(data + off + 4);
    }
    s->count += n;
    s->size += len;
    s->dirty = 1;
    return RL_OK;
}

int rl_append_records(rl_log *log, const uint8_t *data, size_t len) {
    size_t off = 0, n = 0;
    uint64_t start, need;
    int rc = check_writable(log);
    if (rc) return rc;
    if (len == 0) return RL_OK;
    if (len > RL_MAX_BATCH)
        return rl__fail(log, RL_ERR_INVAL, 0, "batch of %zu bytes is over the 1 GiB limit", len);
    if (len < RL_RECORD_HEADER)
        return rl__fail(log, RL_ERR_BATCH, 0, "record header cut short at offset 0 of the batch");
    start = rl__get64(data + 8);
    if (start == 0) return rl__fail(log, RL_ERR_INVAL, 0, "log indexes start at 1, got index 0");
    while (off < len) {
        const char *why = rl__check_record(data + off, len - off, start + n, &need);
        if (why) {
            if (need && rl__get64(data + off + 8) != start + n &&
                rl_crc32c(0, data + off + 4, (size_t)need - 4) == rl__get32(data + off))
                return rl__fail(log, RL_ERR_INVAL, 0,
                                "batch indexes are not contiguous: index %llu at offset %zu, "
                                "expected %llu",
                                (unsigned long long)rl__get64(data + off + 8), off,
                                (unsigned long long)(start + n));
            return rl__fail(log, RL_ERR_BATCH, 0, "%s at offset %zu of the batch", why, off);
        }
        off += (size_t)need;
        n++;
    }
    return append_checked(log, data, len, start, n);
}

int rl_append_parts(rl_log *log, size_t n, const uint64_t *indexes, const uint64_t *terms,
                    const uint8_t *kinds, const uint32_t *lens, const uint8_t *payload,
                    size_t payload_len) {
    size_t k, total;
    int rc = check_writable(log);
    if (rc) return rc;
    if (n == 0) return RL_OK;
    if (indexes[0] == 0) return rl__fail(log, RL_ERR_INVAL, 0, "log indexes start at 1, got index 0");
    for (k = 1; k < n; k++)
        if (indexes[k] != indexes[0] + k)
            return rl__fail(log, RL_ERR_INVAL, 0,
                            "entries are not contiguous: index %llu at position %zu after %llu",
                            (unsigned long long)indexes[k], k, (unsigned long long)indexes[k - 1]);
    if (n > (RL_MAX_BATCH - payload_len) / RL_RECORD_HEADER || payload_len > RL_MAX_BATCH)
        return rl__fail(log, RL_ERR_INVAL, 0, "batch is over the 1 GiB limit");
    total = RL_RECORD_HEADER * n + payload_len;
    if (total > log->scratch_cap) {
        size_t cap = log->scratch_cap ? log->scratch_cap : 65536;
        uint8_t *b;
        while (cap < total) cap *= 2;
        b = (uint8_t *)realloc(log->scratch, cap);
        if (!b) return rl__fail(log, RL_ERR_NOMEM, ENOMEM, "out of memory");
        log->scratch = b;
        log->scratch_cap = cap;
    }
    if (rl_encode_parts(n, indexes, terms, kinds, lens, payload, payload_len, log->scratch,
                        log->scratch_cap) != total)
        return rl__fail(log, RL_ERR_INVAL, 0,
                        "payload lengths do not add up to %zu bytes (or one is over 64 MiB)",
                        payload_len);
    return append_checked(log, log->scratch, total, indexes[0], n);
}

int rl_sync(rl_log *log) {
    size_t i;
    uint64_t last;
    int rc = check_writable(log);
    if (rc) return rc;
    last = rl_last_index(log);
    for (i = 0; log->fsync && i < log->nsegs; i++) {
        rl_segment *s = &log->segs[i];
        if (!s->dirty) continue;
        if (rl__fdatasync(s->fd) < 0) return poison(log, errno, "fdatasync", s->name);
        s->dirty = 0;
    }
    /* Only now, after the data's fdatasync returned: the mark never runs ahead of the device.
     * A failed write is not a failed sync (see raftlog.h); mark_unknown retries it next time. */
    if (log->mark_unknown || last > log->mark) (void)mark_write(log, last);
    return RL_OK;
}

static int check_range(rl_log *log, uint64_t lo, uint64_t hi) {
    uint64_t first = rl_first_index(log), last = rl_last_index(log);
    if (lo < first || hi > last + 1 || lo > hi)
        return rl__fail(log, RL_ERR_RANGE, 0, "entries [%llu, %llu) outside stored [%llu, %llu]",
                        (unsigned long long)lo, (unsigned long long)hi,
                        (unsigned long long)first, (unsigned long long)last);
    return RL_OK;
}

/* File offset just past the record with index `index` (stored, in segment s). */
static uint64_t record_end(const rl_segment *s, uint64_t index) {
    uint64_t k = index - s->first;
    return k + 1 < s->count ? s->offsets[k + 1] : s->size;
}

int rl_read_size(rl_log *log, uint64_t lo, uint64_t hi, uint64_t *size) {
    size_t i;
    int rc = check_range(log, lo, hi);
    *size = 0;
    if (rc || lo == hi) return rc;
    for (i = find_segment(log, lo); i < log->nsegs && log->segs[i].first < hi; i++) {
        const rl_segment *s = &log->segs[i];
        uint64_t a = lo > s->first ? lo : s->first;
        uint64_t b = hi < s->first + s->count ? hi : s->first + s->count; /* exclusive */
        if (a >= b) continue;
        *size += record_end(s, b - 1) - s->offsets[a - s->first];
    }
    return RL_OK;
}

int rl_read(rl_log *log, uint64_t lo, uint64_t hi, uint8_t *buf, size_t cap, uint64_t *terms,
            uint8_t *kinds, uint64_t *payload_offsets, uint32_t *payload_lens) {
    size_t i, pos = 0, k = 0;
    uint64_t need;
    int rc = rl_read_size(log, lo, hi, &need);
    if (rc || lo == hi) return rc;
    if (need > cap)
        return rl__fail(log, RL_ERR_INVAL, 0, "read buffer of %zu bytes is smaller than %llu", cap,
                        (unsigned long long)need);
    for (i = find_segment(log, lo); i < log->nsegs && log->segs[i].first < hi; i++) {
        const rl_segment *s = &log->segs[i];
        uint64_t a = lo > s->first ? lo : s->first;
        uint64_t b = hi < s->first + s->count ? hi : s->first + s->count;
        uint64_t from, to, idx;
        size_t start;
        if (a >= b) continue;
        from = s->offsets[a - s->first];
        to = record_end(s, b - 1);
        if (rl__pread_all(s->fd, buf + pos, (size_t)(to - from), from) < 0)
            return rl__fail(log, RL_ERR_IO, errno, "cannot read %s/%s at offset %llu: %s",
                            log->dir, s->name, (unsigned long long)from, strerror(errno));
        start = pos;
        for (idx = a; idx < b; idx++, k++) {
            uint64_t rec = s->offsets[idx - s->first], rlen = record_end(s, idx) - rec;
            const uint8_t *p = buf + start + (rec - from);
            const char *why = rl__check_record(p, (size_t)rlen, idx, &need);
            if (!why && need != rlen) why = "record length disagrees with the index";
            if (!why && rl__get64(p + 16) != s->terms[idx - s->first])
                why = "record term disagrees with the index";
            if (why)
                return rl__fail(log, RL_ERR_CORRUPT, 0,
                                "corrupt log: %s in %s/%s at offset %llu (index %llu) on read",
                                why, log->dir, s->name, (unsigned long long)rec,
                                (unsigned long long)idx);
            if (terms) terms[k] = s->terms[idx - s->first];
            if (kinds) kinds[k] = p[24];
            if (payload_offsets) payload_offsets[k] = (uint64_t)(p - buf) + RL_RECORD_HEADER;
            if (payload_lens) payload_lens[k] = (uint32_t)(rlen - RL_RECORD_HEADER);
        }
        pos += (size_t)(to - from);
    }
    return RL_OK;
}

int rl_term_at(const rl_log *log, uint64_t index, uint64_t *term) {
    const rl_segment *s;
    if (index < rl_first_index(log) || index > rl_last_index(log)) return RL_ERR_RANGE;
    s = &log->segs[find_segment(log, index)];
    *term = s->terms[index - s->first];
    return RL_OK;
}
