/* C unit tests of raftlog: CRC32C (hardware vs table), append/read/reopen, segments, conflicts,
 * torn tails, corruption, injected ENOSPC/EIO, the hard state file (versions 1 and 2), the sync
 * mark, and the opt-in discard of a corrupt suffix.
 *
 * Usage: test_raftlog [case ...]   (no argument runs every case).  CTest runs one case per entry.
 */
#define _POSIX_C_SOURCE 200809L

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "raftlog.h"

static int failures;

#define CHECK(cond)                                                                   \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            failures++;                                                               \
            goto done;                                                                \
        }                                                                             \
    } while (0)

#define CHECK_RC(log, expr, want)                                                          \
    do {                                                                                   \
        int rc_ = (expr);                                                                  \
        if (rc_ != (want)) {                                                               \
            fprintf(stderr, "%s:%d: %s returned %d, want %d (%s)\n", __FILE__, __LINE__,   \
                    #expr, rc_, (want), (log) ? rl_errmsg(log) : "");                      \
            failures++;                                                                    \
            goto done;                                                                     \
        }                                                                                  \
    } while (0)

#define CHECK_OK(log, expr) CHECK_RC(log, expr, RL_OK)

/* ---- helpers ---------------------------------------------------------------------------- */

static char *make_dir(void) {
    char tmpl[] = "/tmp/raftlog-test-XXXXXX";
    char *d = mkdtemp(tmpl);
    char *out;
    if (!d) {
        perror("mkdtemp");
        exit(2);
    }
    out = (char *)malloc(strlen(d) + 1);
    strcpy(out, d);
    return out;
}

static void remove_dir(char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[4096];
    if (d) {
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rnd(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

/* Payload of entry `index`: deterministic, (index % 7) * 3 bytes long. */
static uint32_t payload_len(uint64_t index) { return (uint32_t)(index % 7) * 3; }
static uint8_t payload_byte(uint64_t index, uint32_t k) { return (uint8_t)(index * 31 + k); }

/* Encodes entries [start, start + n) with the given term into *out (malloc'd). */
static size_t encode(uint64_t start, size_t n, uint64_t term, uint8_t **out) {
    uint64_t *idx = (uint64_t *)malloc(n * sizeof *idx), *terms = (uint64_t *)malloc(n * sizeof *terms);
    uint32_t *lens = (uint32_t *)malloc(n * sizeof *lens);
    uint8_t *kinds = (uint8_t *)malloc(n), *payload;
    size_t k, total = 0, pos = 0, written;
    for (k = 0; k < n; k++) total += payload_len(start + k);
    payload = (uint8_t *)malloc(total + 1);
    for (k = 0; k < n; k++) {
        uint32_t j, len = payload_len(start + k);
        idx[k] = start + k;
        terms[k] = term;
        kinds[k] = (uint8_t)(k % 3);
        lens[k] = len;
        for (j = 0; j < len; j++) payload[pos++] = payload_byte(start + k, j);
    }
    *out = (uint8_t *)malloc(25 * n + total);
    written = rl_encode_parts(n, idx, terms, kinds, lens, payload, total, *out, 25 * n + total);
    free(idx);
    free(terms);
    free(lens);
    free(kinds);
    free(payload);
    return written;
}

static int append_range(rl_log *log, uint64_t start, size_t n, uint64_t term) {
    uint8_t *buf;
    size_t len = encode(start, n, term, &buf);
    int rc = len ? rl_append_records(log, buf, len) : -1;
    free(buf);
    return rc;
}

/* 1 when entries [lo, hi) read back with the expected payloads and term. */
static int verify_range(rl_log *log, uint64_t lo, uint64_t hi, uint64_t term) {
    uint64_t size, k;
    uint8_t *buf;
    uint64_t *terms, *offs;
    uint32_t *lens;
    int ok = 1;
    if (rl_read_size(log, lo, hi, &size) != RL_OK) return 0;
    buf = (uint8_t *)malloc(size + 1);
    terms = (uint64_t *)malloc((hi - lo + 1) * 8);
    offs = (uint64_t *)malloc((hi - lo + 1) * 8);
    lens = (uint32_t *)malloc((hi - lo + 1) * 4);
    if (rl_read(log, lo, hi, buf, size, terms, NULL, offs, lens) != RL_OK) {
        fprintf(stderr, "read failed: %s\n", rl_errmsg(log));
        ok = 0;
    }
    for (k = 0; ok && k < hi - lo; k++) {
        uint64_t index = lo + k, t;
        uint32_t j;
        if (terms[k] != term || lens[k] != payload_len(index)) ok = 0;
        for (j = 0; ok && j < lens[k]; j++)
            if (buf[offs[k] + j] != payload_byte(index, j)) ok = 0;
        if (ok && (rl_term_at(log, index, &t) != RL_OK || t != term)) ok = 0;
    }
    free(buf);
    free(terms);
    free(offs);
    free(lens);
    return ok;
}

static rl_log *open_log(const char *dir, uint64_t segment_size) {
    rl_options o;
    rl_log *log = NULL;
    char err[512];
    memset(&o, 0, sizeof o);
    o.segment_size = segment_size;
    o.fsync = 1;
    if (rl_open(dir, &o, &log, err, sizeof err) != RL_OK) {
        fprintf(stderr, "rl_open(%s): %s\n", dir, err);
        return NULL;
    }
    return log;
}

static int open_rc(const char *dir, char *err, size_t errlen) {
    rl_options o;
    rl_log *log = NULL;
    int rc;
    memset(&o, 0, sizeof o);
    o.segment_size = 0;
    o.fsync = 1;
    rc = rl_open(dir, &o, &log, err, errlen);
    rl_close(log);
    return rc;
}

static char *seg_path(const char *dir, uint64_t first) {
    static char path[4096];
    snprintf(path, sizeof path, "%s/%020llu.seg", dir, (unsigned long long)first);
    return path;
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

static void poke(const char *path, long off, uint8_t xor_mask) {
    int fd = open(path, O_RDWR);
    uint8_t b;
    if (fd < 0 || pread(fd, &b, 1, off) != 1) exit(3);
    b ^= xor_mask;
    if (pwrite(fd, &b, 1, off) != 1) exit(3);
    close(fd);
}

/* ---- cases ------------------------------------------------------------------------------ */

static void test_crc32c(void) {
    uint8_t buf[4096 + 8];
    uint8_t zeros[32], ones[32], inc[32];
    size_t i, len, off;
    memset(zeros, 0, 32);
    memset(ones, 0xFF, 32);
    for (i = 0; i < 32; i++) inc[i] = (uint8_t)i;
    /* RFC 3720 (iSCSI) test vectors. */
    CHECK(rl_crc32c_table(0, "123456789", 9) == 0xE3069283u);
    CHECK(rl_crc32c_table(0, zeros, 32) == 0x8A9136AAu);
    CHECK(rl_crc32c_table(0, ones, 32) == 0x62A8AB43u);
    CHECK(rl_crc32c_table(0, inc, 32) == 0x46DD794Eu);
    CHECK(rl_crc32c_hw(0, "123456789", 9) == 0xE3069283u);
    CHECK(rl_crc32c(0, "", 0) == 0);
    printf("hardware CRC32C available: %d\n", rl_crc32c_hw_available());
    for (i = 0; i < sizeof buf; i++) buf[i] = (uint8_t)rnd();
    for (len = 0; len <= 4096; len += (len < 80 ? 1 : 97))
        for (off = 0; off < 8; off++) {
            uint32_t t = rl_crc32c_table(0, buf + off, len), h = rl_crc32c_hw(0, buf + off, len);
            CHECK(t == h);
            /* Incremental use gives the same value as one call. */
            CHECK(rl_crc32c(rl_crc32c(0, buf + off, len / 3), buf + off + len / 3, len - len / 3) == t);
        }
    rl_crc32c_force_table(1);
    CHECK(rl_crc32c(0, "123456789", 9) == 0xE3069283u);
    rl_crc32c_force_table(0);
done:
    rl_crc32c_force_table(0);
}

static void test_basic(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 0);
    uint64_t t;
    CHECK(log);
    CHECK(rl_first_index(log) == 1 && rl_last_index(log) == 0);
    CHECK_RC(log, rl_term_at(log, 1, &t), RL_ERR_RANGE);
    CHECK_OK(log, append_range(log, 1, 100, 3));
    CHECK(rl_last_index(log) == 100);
    CHECK(verify_range(log, 1, 101, 3));
    CHECK(verify_range(log, 40, 41, 3));
    CHECK(verify_range(log, 50, 50, 3));
    CHECK_RC(log, rl_read_size(log, 0, 5, &t), RL_ERR_RANGE);
    CHECK_RC(log, rl_read_size(log, 5, 102, &t), RL_ERR_RANGE);
    CHECK_OK(log, rl_sync(log));
    CHECK_OK(log, rl_close(log));
    log = open_log(dir, 0);
    CHECK(log);
    CHECK(rl_recovery_count(log) == 0);
    CHECK(rl_first_index(log) == 1 && rl_last_index(log) == 100);
    CHECK(verify_range(log, 1, 101, 3));
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_segments(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 256);
    uint64_t i;
    CHECK(log);
    for (i = 1; i <= 200; i++) CHECK_OK(log, append_range(log, i, 1, 1 + i / 50));
    CHECK(rl_segment_count(log) > 10);
    for (i = 1; i <= 200; i++) CHECK(verify_range(log, i, i + 1, 1 + i / 50));
    CHECK_OK(log, rl_close(log));
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_last_index(log) == 200);
    for (i = 1; i <= 200; i++) CHECK(verify_range(log, i, i + 1, 1 + i / 50));
    /* Compaction drops whole segments only, never past index + 1, never the last one. */
    CHECK_OK(log, rl_compact_prefix(log, 120));
    CHECK(rl_first_index(log) <= 121 && rl_first_index(log) > 100);
    CHECK_OK(log, rl_compact_prefix(log, 1000));
    CHECK(rl_segment_count(log) == 1 && rl_last_index(log) == 200);
    /* Truncation back into the last segment, then into nothing. */
    CHECK_OK(log, rl_truncate_suffix(log, 199));
    CHECK(rl_last_index(log) == 198);
    CHECK_OK(log, rl_truncate_suffix(log, 1));
    CHECK(rl_last_index(log) + 1 == rl_first_index(log));
    i = rl_first_index(log);
    CHECK_OK(log, rl_close(log));
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_first_index(log) == i && rl_last_index(log) == i - 1);
    CHECK_OK(log, append_range(log, i, 50, 9));
    CHECK(verify_range(log, i, i + 50, 9));
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_conflict(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 200);
    uint64_t t;
    CHECK(log);
    CHECK_OK(log, append_range(log, 1, 30, 1));
    CHECK_OK(log, append_range(log, 10, 5, 2)); /* replaces 10..30 */
    CHECK(rl_last_index(log) == 14);
    CHECK_OK(log, rl_term_at(log, 9, &t));
    CHECK(t == 1);
    CHECK(verify_range(log, 10, 15, 2));
    CHECK_RC(log, append_range(log, 16, 1, 2), RL_ERR_INVAL); /* gap */
    CHECK_RC(log, append_range(log, 0, 1, 2), RL_ERR_INVAL);
    CHECK_OK(log, rl_close(log));
    log = open_log(dir, 200);
    CHECK(log);
    CHECK(rl_last_index(log) == 14 && verify_range(log, 1, 10, 1) && verify_range(log, 10, 15, 2));
    CHECK_OK(log, rl_compact_prefix(log, 12));
    if (rl_first_index(log) > 1)
        CHECK_RC(log, append_range(log, rl_first_index(log) - 1, 1, 3), RL_ERR_INVAL);
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_torn_tail(void) {
    /* Cut the file at every offset inside the last record: recovery keeps records 1..9. */
    long full = 0, start = 0, cut;
    for (cut = -1;; cut++) {
        char *dir = make_dir();
        rl_log *log = open_log(dir, 0);
        rl_repair rep;
        CHECK(log);
        CHECK_OK(log, append_range(log, 1, 9, 1));
        start = file_size(seg_path(dir, 1));
        CHECK_OK(log, append_range(log, 10, 1, 1));
        full = file_size(seg_path(dir, 1));
        rl_close(log);
        log = NULL;
        if (cut < 0) cut = start; /* first iteration only computes the sizes */
        if (cut >= full) {
            remove_dir(dir);
            break;
        }
        CHECK(truncate(seg_path(dir, 1), cut) == 0);
        log = open_log(dir, 0);
        CHECK(log);
        CHECK(rl_last_index(log) == 9);
        CHECK(verify_range(log, 1, 10, 1));
        if (cut > start) {
            CHECK(rl_recovery_count(log) == 1);
            CHECK_OK(log, rl_recovery_get(log, 0, &rep));
            CHECK(rep.offset == (uint64_t)start && rep.bytes == (uint64_t)(cut - start));
            CHECK(strcmp(rep.file, "00000000000000000001.seg") == 0);
        }
        CHECK(file_size(seg_path(dir, 1)) == start);
        CHECK_OK(log, append_range(log, 10, 3, 2));
        CHECK(verify_range(log, 10, 13, 2));
    done:
        rl_close(log);
        if (failures) {
            remove_dir(dir);
            return;
        }
        remove_dir(dir);
    }
}

static void test_crc_flip(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 0);
    char err[512];
    long size;
    CHECK(log);
    CHECK_OK(log, append_range(log, 1, 10, 1));
    rl_close(log);
    log = NULL;
    size = file_size(seg_path(dir, 1));
    /* A bad record in the middle of the last segment, with good records after it: corruption. */
    poke(seg_path(dir, 1), 32 + 30, 0x40);
    CHECK(open_rc(dir, err, sizeof err) == RL_ERR_CORRUPT);
    CHECK(strstr(err, "00000000000000000001.seg") && strstr(err, "offset"));
    poke(seg_path(dir, 1), 32 + 30, 0x40);
    CHECK(open_rc(dir, err, sizeof err) == RL_OK);
    /* A flip in the final record: a torn tail, cut off. */
    poke(seg_path(dir, 1), size - 1, 0x01);
    log = open_log(dir, 0);
    CHECK(log);
    CHECK(rl_last_index(log) == 9 && rl_recovery_count(log) == 1);
    rl_close(log);
    log = NULL;
    remove_dir(dir);
    /* A flip in an earlier segment is always corruption. */
    dir = make_dir();
    log = open_log(dir, 128);
    CHECK(log);
    {
        uint64_t i;
        for (i = 1; i <= 30; i++) CHECK_OK(log, append_range(log, i, 1, 1));
    }
    CHECK(rl_segment_count(log) > 2);
    rl_close(log);
    log = NULL;
    poke(seg_path(dir, 1), file_size(seg_path(dir, 1)) - 1, 0x01);
    CHECK(open_rc(dir, err, sizeof err) == RL_ERR_CORRUPT);
    CHECK(strstr(err, "not the last segment"));
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_missing_segment(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 128);
    char err[512], second[4096];
    uint64_t i;
    CHECK(log);
    for (i = 1; i <= 30; i++) CHECK_OK(log, append_range(log, i, 1, 1));
    CHECK(rl_segment_count(log) >= 3);
    /* Find the second segment's name through the index: its first index is 1 + count(seg 1). */
    {
        uint64_t f = 2;
        while (file_size(seg_path(dir, f)) < 0) f++;
        snprintf(second, sizeof second, "%s", seg_path(dir, f));
    }
    rl_close(log);
    log = NULL;
    CHECK(unlink(second) == 0);
    CHECK(open_rc(dir, err, sizeof err) == RL_ERR_CORRUPT);
    CHECK(strstr(err, "missing"));
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_zero_header(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 0);
    char err[512];
    uint8_t zeros[32];
    int fd;
    memset(zeros, 0, sizeof zeros);
    CHECK(log);
    CHECK_OK(log, append_range(log, 1, 5, 1));
    rl_close(log);
    log = NULL;
    fd = open(seg_path(dir, 1), O_RDWR);
    CHECK(fd >= 0 && pwrite(fd, zeros, 32, 0) == 32);
    close(fd);
    CHECK(open_rc(dir, err, sizeof err) == RL_ERR_CORRUPT);
    CHECK(strstr(err, "offset 0"));
    remove_dir(dir);
    /* An empty last segment with a torn header is removed (its creation was torn). */
    dir = make_dir();
    log = open_log(dir, 0);
    CHECK(log);
    rl_close(log);
    log = NULL;
    CHECK(truncate(seg_path(dir, 1), 10) == 0);
    log = open_log(dir, 0);
    CHECK(log);
    CHECK(rl_recovery_count(log) == 1 && rl_first_index(log) == 1 && rl_last_index(log) == 0);
    CHECK_OK(log, append_range(log, 1, 2, 1));
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_enospc(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 0);
    long before;
    CHECK(log);
    CHECK_OK(log, append_range(log, 1, 10, 1));
    before = file_size(seg_path(dir, 1));
    rl_fault_set(RL_FAULT_WRITE, 0, ENOSPC, 1);
    CHECK_RC(log, append_range(log, 11, 10, 1), RL_ERR_IO);
    CHECK(rl_errno(log) == ENOSPC);
    CHECK(strstr(rl_errmsg(log), "00000000000000000001.seg"));
    CHECK(rl_last_index(log) == 10 && file_size(seg_path(dir, 1)) == before);
    /* A write that got half way: the partial bytes are cut off again. */
    rl_fault_set(RL_FAULT_SHORT_WRITE, 0, ENOSPC, 1);
    CHECK_RC(log, append_range(log, 11, 10, 1), RL_ERR_IO);
    CHECK(rl_last_index(log) == 10 && file_size(seg_path(dir, 1)) == before);
    /* Space is back: the store is usable. */
    rl_fault_clear();
    CHECK_OK(log, append_range(log, 11, 10, 1));
    CHECK_OK(log, rl_sync(log));
    CHECK(verify_range(log, 1, 21, 1));
    /* Creating a segment fails: nothing changes. */
    rl_close(log);
    log = open_log(dir, 64);
    CHECK(log);
    rl_fault_set(RL_FAULT_OPEN, 0, ENOSPC, 1);
    CHECK_RC(log, append_range(log, 21, 1, 1), RL_ERR_IO);
    rl_fault_clear();
    CHECK(rl_last_index(log) == 20 && rl_segment_count(log) == 1);
    CHECK_OK(log, append_range(log, 21, 1, 1));
    CHECK(rl_segment_count(log) == 2);
    rl_close(log);
    log = open_log(dir, 64);
    CHECK(log);
    CHECK(rl_last_index(log) == 21 && rl_recovery_count(log) == 0 && verify_range(log, 1, 22, 1));
done:
    rl_fault_clear();
    rl_close(log);
    remove_dir(dir);
}

static void test_fsync_failure(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 0);
    CHECK(log);
    CHECK_OK(log, append_range(log, 1, 10, 1));
    rl_fault_set(RL_FAULT_FSYNC, 0, EIO, 1);
    CHECK_RC(log, rl_sync(log), RL_ERR_IO);
    CHECK(rl_errno(log) == EIO);
    /* Poisoned: nothing more is written until the log is reopened. */
    CHECK_RC(log, append_range(log, 11, 1, 1), RL_ERR_STATE);
    CHECK_RC(log, rl_sync(log), RL_ERR_STATE);
    CHECK(verify_range(log, 1, 11, 1));
    rl_close(log);
    log = open_log(dir, 0);
    CHECK(log);
    CHECK(rl_last_index(log) == 10);
    CHECK_OK(log, append_range(log, 11, 1, 1));
    CHECK_OK(log, rl_sync(log));
done:
    rl_fault_clear();
    rl_close(log);
    remove_dir(dir);
}

static void test_batch_validation(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 0);
    uint8_t *buf = NULL, *buf2 = NULL;
    size_t len, len2, count, bad;
    char err[256];
    CHECK(log);
    len = encode(1, 5, 1, &buf);
    CHECK_OK(NULL, rl_batch_scan(buf, len, &count, &bad, err, sizeof err));
    CHECK(count == 5);
    buf[len - 1] ^= 1;
    CHECK(rl_batch_scan(buf, len, &count, &bad, err, sizeof err) == RL_ERR_BATCH);
    CHECK(count == 4 && bad > 0);
    CHECK_RC(log, rl_append_records(log, buf, len), RL_ERR_BATCH);
    CHECK(rl_last_index(log) == 0);
    buf[len - 1] ^= 1;
    CHECK_RC(log, rl_append_records(log, buf, len - 1), RL_ERR_BATCH); /* cut short */
    /* Two valid batches glued with a gap in the indexes. */
    len2 = encode(7, 2, 1, &buf2);
    buf = (uint8_t *)realloc(buf, len + len2);
    memcpy(buf + len, buf2, len2);
    CHECK_RC(log, rl_append_records(log, buf, len + len2), RL_ERR_INVAL);
    CHECK(strstr(rl_errmsg(log), "contiguous"));
    CHECK_OK(log, rl_append_records(log, buf, len));
    CHECK(rl_last_index(log) == 5);
done:
    free(buf);
    free(buf2);
    rl_close(log);
    remove_dir(dir);
}

static void test_recovery_large(void) {
    /* 200,000 entries in batches over 4 MiB segments, reopened: the index is rebuilt. */
    char *dir = make_dir();
    rl_options o;
    rl_log *log = NULL;
    char err[512];
    uint64_t i;
    memset(&o, 0, sizeof o);
    o.segment_size = 4 << 20;
    o.fsync = 0;
    CHECK_OK(NULL, rl_open(dir, &o, &log, err, sizeof err));
    for (i = 1; i <= 200000; i += 1000) CHECK_OK(log, append_range(log, i, 1000, 7));
    rl_close(log);
    log = NULL;
    CHECK_OK(NULL, rl_open(dir, &o, &log, err, sizeof err));
    CHECK(rl_last_index(log) == 200000 && rl_segment_count(log) > 1);
    CHECK(verify_range(log, 1, 200001, 7));
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_hardstate(void) {
    char *dir = make_dir();
    rl_hs *hs = NULL;
    char err[256], vote[64], path[4096];
    uint64_t term, commit, recovering;
    int64_t vlen;
    int found;
    CHECK(rl_hs_open(dir, 1, &hs, err, sizeof err) == RL_OK);
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) == RL_OK);
    CHECK(!found && term == 0 && commit == 0 && vlen == -1);
    CHECK(rl_hs_save(hs, 5, 17, 0, "node-2", 6) == RL_OK);
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) == RL_OK);
    CHECK(found && term == 5 && commit == 17 && vlen == 6 && !memcmp(vote, "node-2", 6));
    CHECK(rl_hs_save(hs, 6, 18, 0, NULL, -1) == RL_OK);
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) == RL_OK);
    CHECK(found && term == 6 && commit == 18 && vlen == -1);
    CHECK(rl_hs_save(hs, 7, 18, 0, "", 0) == RL_OK); /* empty vote is not no vote */
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) == RL_OK);
    CHECK(vlen == 0);
    /* A failed rename leaves the previous state. */
    rl_fault_set(RL_FAULT_RENAME, 0, EIO, 1);
    CHECK(rl_hs_save(hs, 8, 20, 0, "x", 1) == RL_ERR_IO);
    rl_fault_clear();
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) == RL_OK);
    CHECK(term == 7 && commit == 18);
    snprintf(path, sizeof path, "%s/hardstate", dir);
    poke(path, 16, 0x01);
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) == RL_ERR_CORRUPT);
    CHECK(strstr(rl_hs_errmsg(hs), "hardstate"));
done:
    rl_fault_clear();
    rl_hs_close(hs);
    remove_dir(dir);
}

static int count_segments(const char *dir) {
    DIR *d = opendir(dir);
    struct dirent *e;
    int n = 0;
    if (!d) return -1;
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len == 24 && !strcmp(e->d_name + 20, ".seg")) n++;
    }
    closedir(d);
    return n;
}

/* After reset: exactly one segment, <next>.seg, header only. */
static int is_reset_to(rl_log *log, const char *dir, uint64_t next) {
    uint64_t t;
    return rl_first_index(log) == next && rl_last_index(log) == next - 1 &&
           rl_segment_count(log) == 1 && count_segments(dir) == 1 &&
           file_size(seg_path(dir, next)) == 32 && rl_term_at(log, next, &t) == RL_ERR_RANGE &&
           rl_term_at(log, next - 1, &t) == RL_ERR_RANGE;
}

static void test_reset(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 256);
    uint64_t i, first, size;
    CHECK(log);
    for (i = 1; i <= 60; i++) CHECK_OK(log, append_range(log, i, 1, 1));
    CHECK(rl_segment_count(log) > 3);
    CHECK_OK(log, rl_compact_prefix(log, 20));
    first = rl_first_index(log);
    CHECK(first > 1 && first <= 21);
    CHECK_RC(log, rl_reset(log, 0), RL_ERR_INVAL);
    CHECK(rl_last_index(log) == 60);
    /* Ahead of the log: the oldest segment is renamed. */
    CHECK_OK(log, rl_reset(log, 1000));
    CHECK(is_reset_to(log, dir, 1000));
    CHECK_RC(log, append_range(log, 1001, 1, 2), RL_ERR_INVAL); /* gap */
    CHECK_RC(log, append_range(log, 999, 1, 2), RL_ERR_INVAL);  /* before first */
    CHECK_RC(log, rl_read_size(log, 999, 1000, &size), RL_ERR_RANGE);
    CHECK_OK(log, rl_read_size(log, 1000, 1000, &size));
    for (i = 1000; i < 1030; i++) CHECK_OK(log, append_range(log, i, 1, 2));
    CHECK(rl_segment_count(log) > 1 && verify_range(log, 1000, 1030, 2));
    CHECK_OK(log, rl_close(log));
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_recovery_count(log) == 0 && rl_first_index(log) == 1000 && rl_last_index(log) == 1029);
    CHECK(verify_range(log, 1000, 1030, 2));
    /* Inside the log, at a segment's first index (a name that exists), then below the log. */
    i = rl_first_index(log) + 1;
    while (file_size(seg_path(dir, i)) < 0) i++;
    CHECK_OK(log, rl_reset(log, i));
    CHECK(is_reset_to(log, dir, i));
    CHECK_OK(log, rl_reset(log, 5));
    CHECK(is_reset_to(log, dir, 5));
    /* At the first index of the only segment: cut in place; again: nothing to do. */
    CHECK_OK(log, append_range(log, 5, 3, 3));
    CHECK_OK(log, rl_reset(log, 5));
    CHECK(is_reset_to(log, dir, 5));
    CHECK_OK(log, rl_reset(log, 5));
    CHECK(is_reset_to(log, dir, 5));
    /* An empty log ignores truncation and compaction. */
    CHECK_OK(log, rl_truncate_suffix(log, 0));
    CHECK_OK(log, rl_compact_prefix(log, 100));
    CHECK(is_reset_to(log, dir, 5));
    CHECK_OK(log, rl_sync(log));
    CHECK_OK(log, rl_close(log));
    /* A directory whose only segment is empty at N reopens as an empty log at N. */
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_recovery_count(log) == 0 && is_reset_to(log, dir, 5));
    CHECK_OK(log, append_range(log, 5, 2, 4));
    CHECK(verify_range(log, 5, 7, 4));
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_reset_faults(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 256);
    rl_repair rep;
    uint64_t i, first_end;
    CHECK(log);
    for (i = 1; i <= 40; i++) CHECK_OK(log, append_range(log, i, 1, 1));
    CHECK(rl_segment_count(log) > 2);
    /* Cutting the oldest fails: newer segments are gone, the oldest still holds its entries. */
    rl_fault_set(RL_FAULT_TRUNCATE, 0, EIO, 1);
    CHECK_RC(log, rl_reset(log, 100), RL_ERR_IO);
    rl_fault_clear();
    CHECK(rl_errno(log) == EIO && rl_segment_count(log) == 1 && count_segments(dir) == 1);
    first_end = rl_last_index(log);
    CHECK(rl_first_index(log) == 1 && first_end >= 1 && first_end < 40);
    CHECK(verify_range(log, 1, first_end + 1, 1));
    CHECK_OK(log, append_range(log, first_end + 1, 2, 1)); /* still usable */
    CHECK_OK(log, rl_close(log));
    /* The rename fails: poisoned; reopening finds a zero-length segment under the old name. */
    log = open_log(dir, 256);
    CHECK(log);
    rl_fault_set(RL_FAULT_RENAME, 0, EIO, 1);
    CHECK_RC(log, rl_reset(log, 100), RL_ERR_IO);
    rl_fault_clear();
    CHECK(rl_first_index(log) == 1 && rl_last_index(log) == 0);
    CHECK_RC(log, append_range(log, 1, 1, 1), RL_ERR_STATE);
    CHECK_RC(log, rl_reset(log, 100), RL_ERR_STATE);
    rl_close(log);
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_recovery_count(log) == 1 && rl_recovery_get(log, 0, &rep) == RL_OK && rep.removed);
    CHECK(is_reset_to(log, dir, 1));
    CHECK_OK(log, append_range(log, 1, 20, 1));
    /* The header write fails: poisoned; reopening completes the reset. */
    rl_fault_set(RL_FAULT_WRITE, 0, ENOSPC, 1);
    CHECK_RC(log, rl_reset(log, 100), RL_ERR_IO);
    rl_fault_clear();
    CHECK(rl_errno(log) == ENOSPC);
    CHECK_RC(log, rl_sync(log), RL_ERR_STATE);
    rl_close(log);
    CHECK(file_size(seg_path(dir, 100)) == 0);
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_recovery_count(log) == 1 && is_reset_to(log, dir, 100));
    /* A failed fsync after the cut poisons too. */
    CHECK_OK(log, append_range(log, 100, 5, 1));
    rl_fault_set(RL_FAULT_FSYNC, 0, EIO, 1);
    CHECK_RC(log, rl_reset(log, 200), RL_ERR_IO);
    rl_fault_clear();
    CHECK_RC(log, rl_reset(log, 200), RL_ERR_STATE);
done:
    rl_fault_clear();
    rl_close(log);
    remove_dir(dir);
}

static void test_compact_keeps_last(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 128);
    uint64_t i;
    CHECK(log);
    for (i = 1; i <= 30; i++) CHECK_OK(log, append_range(log, i, 1, 1));
    CHECK(rl_segment_count(log) > 2);
    CHECK_OK(log, rl_compact_prefix(log, 1000));
    CHECK(rl_last_index(log) == 30 && rl_first_index(log) <= 30 && rl_segment_count(log) == 1);
    CHECK(verify_range(log, rl_first_index(log), 31, 1));
    /* A roll whose records fail to go in leaves an empty newest segment: the one before it
     * (holding the last entry) still stays. */
    i = rl_last_index(log);
    rl_fault_set(RL_FAULT_WRITE, 1, ENOSPC, 1); /* the new segment's header, then the records */
    CHECK_RC(log, append_range(log, i + 1, 20, 1), RL_ERR_IO);
    rl_fault_clear();
    CHECK(rl_last_index(log) == i && rl_segment_count(log) == 2);
    CHECK(file_size(seg_path(dir, i + 1)) == 32);
    CHECK_OK(log, rl_compact_prefix(log, 1000));
    CHECK(rl_last_index(log) == i && rl_first_index(log) <= i);
    CHECK(verify_range(log, rl_first_index(log), i + 1, 1));
done:
    rl_fault_clear();
    rl_close(log);
    remove_dir(dir);
}


/* ---- syncer ----------------------------------------------------------------------------- */

static int wait_readable(int fd) {
    struct pollfd p;
    p.fd = fd;
    p.events = POLLIN;
    p.revents = 0;
    return poll(&p, 1, 10000) == 1 && (p.revents & POLLIN);
}

static void test_syncer(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 0);
    rl_syncer *s = NULL;
    int result = -1, k;
    CHECK(log);
    CHECK_OK(NULL, rl_syncer_open(&s));
    CHECK(rl_syncer_fd(s) >= 0);
    CHECK_RC(NULL, rl_syncer_collect(s, &result), RL_ERR_STATE); /* nothing submitted */
    for (k = 0; k < 20; k++) {
        CHECK_OK(log, append_range(log, (uint64_t)k * 5 + 1, 5, 1));
        CHECK_OK(NULL, rl_syncer_submit(s, log));
        CHECK_RC(NULL, rl_syncer_submit(s, log), RL_ERR_STATE); /* one job at a time */
        CHECK(wait_readable(rl_syncer_fd(s)));
        result = -1;
        CHECK_OK(NULL, rl_syncer_collect(s, &result));
        CHECK(result == RL_OK);
        CHECK_RC(NULL, rl_syncer_collect(s, &result), RL_ERR_STATE); /* collected once */
    }
    /* rl_syncer_wait blocks until the end instead of polling the fd. */
    CHECK_OK(log, append_range(log, 101, 5, 1));
    CHECK_OK(NULL, rl_syncer_submit(s, log));
    CHECK_OK(NULL, rl_syncer_wait(s, &result));
    CHECK(result == RL_OK);
    CHECK(verify_range(log, 1, 106, 1));
    /* close() with a job in flight finishes it first. */
    CHECK_OK(log, append_range(log, 106, 5, 1));
    CHECK_OK(NULL, rl_syncer_submit(s, log));
    rl_syncer_close(s);
    s = NULL;
    rl_close(log);
    log = open_log(dir, 0);
    CHECK(log);
    CHECK(rl_last_index(log) == 110);
done:
    rl_syncer_close(s);
    rl_close(log);
    remove_dir(dir);
}

static void test_syncer_failure(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 0);
    rl_syncer *s = NULL;
    int result = -1;
    CHECK(log);
    CHECK_OK(NULL, rl_syncer_open(&s));
    CHECK_OK(log, append_range(log, 1, 10, 1));
    rl_fault_set(RL_FAULT_FSYNC, 0, EIO, 1);
    CHECK_OK(NULL, rl_syncer_submit(s, log));
    CHECK(wait_readable(rl_syncer_fd(s)));
    CHECK_OK(NULL, rl_syncer_collect(s, &result));
    CHECK(result == RL_ERR_IO);
    CHECK(rl_errno(log) == EIO);
    /* The log is poisoned, as after a failed rl_sync on the caller's thread. */
    CHECK_RC(log, append_range(log, 11, 1, 1), RL_ERR_STATE);
    CHECK_RC(NULL, rl_syncer_submit(s, NULL), RL_ERR_INVAL);
done:
    rl_fault_clear();
    rl_syncer_close(s);
    rl_close(log);
    remove_dir(dir);
}

/* ---- hard state version 2, sync mark, protocol-aware recovery --------------------------- */

static void put64(uint8_t *p, uint64_t v) {
    int k;
    for (k = 0; k < 8; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static void put32(uint8_t *p, uint32_t v) {
    int k;
    for (k = 0; k < 4; k++) p[k] = (uint8_t)(v >> (8 * k));
}

static uint32_t get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static int write_file(const char *path, const void *data, size_t len) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int ok = fd >= 0 && write(fd, data, len) == (ssize_t)len;
    if (fd >= 0) close(fd);
    return ok;
}

static void test_hardstate_v2(void) {
    char *dir = make_dir();
    rl_hs *hs = NULL;
    char err[256], vote[64], path[4096];
    uint8_t v1[32 + 2 + 4], file[64];
    uint64_t term, commit, recovering;
    int64_t vlen;
    int found, fd;
    CHECK(rl_hs_open(dir, 1, &hs, err, sizeof err) == RL_OK);
    CHECK(rl_hs_save(hs, 9, 30, 41, "n3", 2) == RL_OK);
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) == RL_OK);
    CHECK(found && term == 9 && commit == 30 && recovering == 41 && vlen == 2);
    CHECK(!memcmp(vote, "n3", 2));
    snprintf(path, sizeof path, "%s/hardstate", dir);
    CHECK(file_size(path) == 40 + 2 + 4);
    fd = open(path, O_RDONLY);
    CHECK(fd >= 0 && pread(fd, file, 12, 0) == 12);
    close(fd);
    CHECK(get32(file + 8) == 2);
    /* A version-1 file (as written before the recovering field existed) still loads. */
    memcpy(v1, "RAFTHST", 8);
    put32(v1 + 8, 1);
    put32(v1 + 12, 2);
    put64(v1 + 16, 4);
    put64(v1 + 24, 11);
    memcpy(v1 + 32, "n1", 2);
    put32(v1 + 34, rl_crc32c(0, v1, 34));
    CHECK(write_file(path, v1, sizeof v1));
    recovering = 99;
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) == RL_OK);
    CHECK(found && term == 4 && commit == 11 && recovering == 0 && vlen == 2);
    CHECK(!memcmp(vote, "n1", 2));
    /* A bad CRC in a version-1 file is still caught; a version-2 cut short too. */
    poke(path, 24, 0x01);
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) ==
          RL_ERR_CORRUPT);
    CHECK(rl_hs_save(hs, 5, 12, 7, NULL, -1) == RL_OK);
    CHECK(truncate(path, 40) == 0);
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) ==
          RL_ERR_CORRUPT);
    /* Recovering rides through the CRC: a flip in it is caught. */
    CHECK(rl_hs_save(hs, 5, 12, 7, NULL, -1) == RL_OK);
    poke(path, 32, 0x01);
    CHECK(rl_hs_load(hs, &term, &commit, &recovering, vote, sizeof vote, &vlen, &found) ==
          RL_ERR_CORRUPT);
done:
    rl_hs_close(hs);
    remove_dir(dir);
}

/* The index in <dir>/syncmark, checking its format; -1 when missing or empty, -2 when bad. */
static long long mark_on_disk(const char *dir) {
    char path[4096];
    uint8_t rec[32];
    uint64_t v = 0;
    long size;
    int fd, k;
    snprintf(path, sizeof path, "%s/syncmark", dir);
    size = file_size(path);
    if (size <= 0) return -1;
    if (size != 32) return -2;
    fd = open(path, O_RDONLY);
    if (fd < 0 || pread(fd, rec, 32, 0) != 32) exit(3);
    close(fd);
    if (memcmp(rec, "RAFTSYN", 8) != 0 || get32(rec + 8) != 1 || get32(rec + 12) != 32 ||
        rl_crc32c(0, rec, 28) != get32(rec + 28))
        return -2;
    for (k = 7; k >= 0; k--) v = v << 8 | rec[16 + k];
    return (long long)v;
}

static rl_log *open_opts(const char *dir, uint64_t segment_size, int fsync, int discard) {
    rl_options o;
    rl_log *log = NULL;
    char err[512];
    memset(&o, 0, sizeof o);
    o.segment_size = segment_size;
    o.fsync = fsync;
    o.discard_corrupt_suffix = discard;
    if (rl_open(dir, &o, &log, err, sizeof err) != RL_OK) {
        fprintf(stderr, "rl_open(%s): %s\n", dir, err);
        return NULL;
    }
    return log;
}

static void test_syncmark(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 256);
    rl_repair rep;
    char path[4096];
    uint64_t i;
    CHECK(log);
    CHECK(rl_synced_index_at_open(log) == 0 && mark_on_disk(dir) == -1);
    CHECK_OK(log, append_range(log, 1, 10, 1));
    CHECK(mark_on_disk(dir) == -1); /* appends alone claim nothing */
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == 10);
    CHECK_OK(log, append_range(log, 11, 10, 1));
    CHECK_OK(log, rl_close(log));
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_synced_index_at_open(log) == 10 && rl_last_index(log) == 20);
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == 20 && rl_synced_index_at_open(log) == 10);
    /* truncate_suffix lowers it at once (before any sync), compaction leaves it. */
    for (i = 21; i <= 40; i++) CHECK_OK(log, append_range(log, i, 1, 1));
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == 40);
    CHECK_OK(log, rl_compact_prefix(log, 20));
    CHECK(rl_first_index(log) > 1 && mark_on_disk(dir) == 40);
    CHECK_OK(log, rl_truncate_suffix(log, 35));
    CHECK(mark_on_disk(dir) == 34);
    CHECK_OK(log, append_range(log, 30, 3, 2)); /* a conflict: truncation at 30 */
    CHECK(mark_on_disk(dir) == 29);
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == 32);
    CHECK_OK(log, rl_truncate_suffix(log, 100)); /* past the end, below nothing: unchanged */
    CHECK(mark_on_disk(dir) == 32);
    /* reset(n) sets it to n - 1, up or down. */
    CHECK_OK(log, rl_reset(log, 500));
    CHECK(mark_on_disk(dir) == 499);
    CHECK_OK(log, append_range(log, 500, 5, 3));
    CHECK_OK(log, rl_reset(log, 200));
    CHECK(mark_on_disk(dir) == 199);
    CHECK_OK(log, append_range(log, 200, 5, 3));
    CHECK_OK(log, rl_sync(log));
    CHECK_OK(log, rl_close(log));
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_synced_index_at_open(log) == 204 && rl_recovery_count(log) == 0);
    rl_close(log);
    /* Missing (an older directory): no record. */
    snprintf(path, sizeof path, "%s/syncmark", dir);
    CHECK(unlink(path) == 0);
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_synced_index_at_open(log) == 0 && rl_recovery_count(log) == 0);
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == 204);
    rl_close(log);
    /* Corrupt: no record, reported, never an error; the next sync writes it whole again. */
    poke(path, 17, 0x10);
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_synced_index_at_open(log) == 0 && rl_recovery_count(log) == 1);
    CHECK_OK(log, rl_recovery_get(log, 0, &rep));
    CHECK(!strcmp(rep.file, "syncmark") && rep.first_lost == 0 && strstr(rep.reason, "CRC"));
    CHECK(mark_on_disk(dir) == -1);
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == 204);
    rl_close(log);
    CHECK(write_file(path, "short", 5));
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_synced_index_at_open(log) == 0 && rl_recovery_count(log) == 1);
    rl_close(log);
    log = NULL;
    remove_dir(dir);
    /* fsync off: the mark is still written on every sync (the page cache outlives a crash). */
    dir = make_dir();
    log = open_opts(dir, 0, 0, 0);
    CHECK(log);
    CHECK_OK(log, append_range(log, 1, 7, 1));
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == 7);
    CHECK_OK(log, rl_truncate_suffix(log, 3));
    CHECK(mark_on_disk(dir) == 2);
done:
    rl_close(log);
    remove_dir(dir);
}

static void test_syncmark_syncer(void) {
    char *dir = make_dir();
    rl_log *log = open_log(dir, 256);
    rl_syncer *s = NULL;
    int result = -1, k;
    CHECK(log);
    CHECK_OK(NULL, rl_syncer_open(&s));
    for (k = 0; k < 5; k++) {
        uint64_t lo = (uint64_t)k * 4 + 1;
        CHECK_OK(log, append_range(log, lo, 4, 1));
        CHECK_OK(NULL, rl_syncer_submit(s, log));
        CHECK_OK(NULL, rl_syncer_wait(s, &result));
        CHECK(result == RL_OK);
        CHECK(mark_on_disk(dir) == (long long)(lo + 3));
    }
    /* A failed background fdatasync writes no mark. */
    CHECK_OK(log, append_range(log, 21, 4, 1));
    rl_fault_set(RL_FAULT_FSYNC, 0, EIO, 1);
    CHECK_OK(NULL, rl_syncer_submit(s, log));
    CHECK_OK(NULL, rl_syncer_wait(s, &result));
    rl_fault_clear();
    CHECK(result == RL_ERR_IO && mark_on_disk(dir) == 20);
    rl_close(log);
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_synced_index_at_open(log) == 20);
done:
    rl_fault_clear();
    rl_syncer_close(s);
    rl_close(log);
    remove_dir(dir);
}

/* Segment first indexes of dir, sorted (at most cap). */
static size_t list_firsts(const char *dir, uint64_t *out, size_t cap) {
    size_t n = 0, a, b;
    uint64_t f;
    for (f = 1; f < 10000 && n < cap; f++)
        if (file_size(seg_path(dir, f)) >= 0) out[n++] = f;
    for (a = 0; a < n; a++)
        for (b = a + 1; b < n; b++)
            if (out[b] < out[a]) {
                f = out[a];
                out[a] = out[b];
                out[b] = f;
            }
    return n;
}

static uint64_t min_first_lost(rl_log *log) {
    size_t i;
    uint64_t m = UINT64_MAX;
    rl_repair rep;
    for (i = 0; i < rl_recovery_count(log); i++)
        if (rl_recovery_get(log, i, &rep) == RL_OK && rep.first_lost && rep.first_lost < m)
            m = rep.first_lost;
    return m;
}

/* A synced log of entries 1..n (one append each, term 1) in dir, closed.  1 on success. */
static int build_synced(const char *dir, uint64_t segment_size, uint64_t n) {
    rl_log *log = open_log(dir, segment_size);
    uint64_t i;
    int ok = log != NULL;
    for (i = 1; ok && i <= n; i++) ok = append_range(log, i, 1, 1) == RL_OK;
    ok = ok && rl_sync(log) == RL_OK;
    rl_close(log);
    return ok;
}

static void test_lost_tail(void) {
    /* A rotten newest record (after a sync) is cut as a torn tail: the log ends below the mark. */
    char *dir = make_dir();
    rl_log *log = NULL;
    rl_repair rep;
    uint64_t firsts[64];
    size_t n;
    CHECK(build_synced(dir, 256, 30));
    n = list_firsts(dir, firsts, 64);
    CHECK(n >= 3);
    poke(seg_path(dir, firsts[n - 1]), file_size(seg_path(dir, firsts[n - 1])) - 1, 0x01);
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_last_index(log) == 29 && rl_synced_index_at_open(log) == 30);
    CHECK(rl_recovery_count(log) == 1);
    CHECK_OK(log, rl_recovery_get(log, 0, &rep));
    CHECK(rep.first_lost == 30 && !rep.removed && strstr(rep.reason, "torn tail"));
    /* A sync does not lower the mark: a crash now still tells that 30 was lost. */
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == 30);
    CHECK_OK(log, rl_close(log));
    /* The newest segment deleted. */
    CHECK(unlink(seg_path(dir, firsts[n - 1])) == 0);
    log = open_log(dir, 256);
    CHECK(log);
    CHECK(rl_last_index(log) == firsts[n - 1] - 1 && rl_synced_index_at_open(log) == 30);
    CHECK(verify_range(log, 1, firsts[n - 1], 1));
    /* Appending past the mark and syncing raises it again. */
    CHECK_OK(log, append_range(log, firsts[n - 1], 40, 2));
    CHECK_OK(log, rl_sync(log));
    CHECK(mark_on_disk(dir) == (long long)(firsts[n - 1] + 39));
done:
    rl_close(log);
    remove_dir(dir);
}

/* 1 when a default open of dir finds nothing to repair and the log ending at `last`. */
static int reopens_clean(const char *dir, uint64_t segment_size, uint64_t last) {
    rl_log *log = open_log(dir, segment_size);
    int ok = log && rl_recovery_count(log) == 0 && rl_last_index(log) == last;
    rl_close(log);
    return ok;
}

/* A fresh directory holding a synced log 1..40 in segments of 128 bytes; their first indexes. */
static char *build_segments(uint64_t *firsts, size_t *n) {
    char *dir = make_dir();
    *n = build_synced(dir, 128, 40) ? list_firsts(dir, firsts, 64) : 0;
    return dir;
}

static void test_discard_corrupt(void) {
    char *dir = make_dir();
    rl_log *log = NULL;
    char err[512];
    uint64_t firsts[64], again[64];
    size_t n, m;
    long size;
    rl_repair rep;
    /* A bad record followed by valid ones in the only segment. */
    log = open_log(dir, 0);
    CHECK(log);
    CHECK_OK(log, append_range(log, 1, 10, 1));
    CHECK_OK(log, rl_sync(log));
    rl_close(log);
    log = NULL;
    size = file_size(seg_path(dir, 1));
    poke(seg_path(dir, 1), 32 + 30, 0x40); /* inside record 2 (record 1 is 25 + 3 bytes) */
    CHECK(open_rc(dir, err, sizeof err) == RL_ERR_CORRUPT);
    CHECK(strstr(err, "followed by a valid record"));
    CHECK(file_size(seg_path(dir, 1)) == size); /* the default changes nothing */
    log = open_opts(dir, 0, 1, 1);
    CHECK(log);
    CHECK(rl_last_index(log) == 1 && rl_synced_index_at_open(log) == 10);
    CHECK(rl_recovery_count(log) == 1);
    CHECK_OK(log, rl_recovery_get(log, 0, &rep));
    CHECK(rep.first_lost == 2 && !rep.removed && rep.offset == 32 + 28);
    CHECK(rep.bytes == (uint64_t)size - rep.offset && strstr(rep.reason, "discarded"));
    CHECK(verify_range(log, 1, 2, 1));
    CHECK_OK(log, append_range(log, 2, 3, 2));
    CHECK_OK(log, rl_close(log));
    log = NULL;
    CHECK(reopens_clean(dir, 0, 4)); /* durable and clean: the default opens it */
    remove_dir(dir);

    /* A bad record in a segment that is not the last: it and every later segment go. */
    dir = build_segments(firsts, &n);
    CHECK(n >= 5);
    /* The second record of the second segment. */
    poke(seg_path(dir, firsts[1]), 32 + 25 + (long)payload_len(firsts[1]) + 3, 0x01);
    CHECK(open_rc(dir, err, sizeof err) == RL_ERR_CORRUPT);
    CHECK(strstr(err, "not the last segment"));
    log = open_opts(dir, 128, 1, 1);
    CHECK(log);
    CHECK(rl_last_index(log) == firsts[1] && rl_synced_index_at_open(log) == 40);
    CHECK(rl_recovery_count(log) == n - 1 && min_first_lost(log) == firsts[1] + 1);
    CHECK(verify_range(log, 1, firsts[1] + 1, 1));
    m = list_firsts(dir, again, 64);
    CHECK(m == 2 && again[1] == firsts[1]);
    rl_close(log);
    log = NULL;
    CHECK(reopens_clean(dir, 128, firsts[1]));
    remove_dir(dir);

    /* A missing segment in the middle: the log ends before the gap. */
    dir = build_segments(firsts, &n);
    CHECK(n >= 5);
    CHECK(unlink(seg_path(dir, firsts[2])) == 0);
    CHECK(open_rc(dir, err, sizeof err) == RL_ERR_CORRUPT && strstr(err, "missing"));
    log = open_opts(dir, 128, 1, 1);
    CHECK(log);
    CHECK(rl_last_index(log) == firsts[2] - 1 && rl_synced_index_at_open(log) == 40);
    CHECK(rl_recovery_count(log) == n - 3 && min_first_lost(log) == firsts[2]);
    CHECK(verify_range(log, 1, firsts[2], 1));
    CHECK(list_firsts(dir, again, 64) == 2);
    rl_close(log);
    log = NULL;
    remove_dir(dir);

    /* A bad header in the first segment: everything goes; the log restarts empty there. */
    dir = build_segments(firsts, &n);
    CHECK(n >= 5);
    poke(seg_path(dir, 1), 3, 0x01);
    log = open_opts(dir, 128, 1, 1);
    CHECK(log);
    CHECK(rl_first_index(log) == 1 && rl_last_index(log) == 0);
    CHECK(rl_recovery_count(log) == n && min_first_lost(log) == 1);
    CHECK(list_firsts(dir, again, 64) == 1 && file_size(seg_path(dir, 1)) == 32);
    CHECK_OK(log, append_range(log, 1, 2, 5));
    CHECK(verify_range(log, 1, 3, 5));
done:
    rl_close(log);
    remove_dir(dir);
}

/* ---- runner ----------------------------------------------------------------------------- */

static const struct {
    const char *name;
    void (*fn)(void);
} CASES[] = {
    {"crc32c", test_crc32c},
    {"basic", test_basic},
    {"segments", test_segments},
    {"conflict", test_conflict},
    {"torn_tail", test_torn_tail},
    {"crc_flip", test_crc_flip},
    {"missing_segment", test_missing_segment},
    {"zero_header", test_zero_header},
    {"enospc", test_enospc},
    {"fsync_failure", test_fsync_failure},
    {"batch_validation", test_batch_validation},
    {"recovery_large", test_recovery_large},
    {"hardstate", test_hardstate},
    {"reset", test_reset},
    {"reset_faults", test_reset_faults},
    {"compact_keeps_last", test_compact_keeps_last},
    {"syncer", test_syncer},
    {"syncer_failure", test_syncer_failure},
    {"hardstate_v2", test_hardstate_v2},
    {"syncmark", test_syncmark},
    {"syncmark_syncer", test_syncmark_syncer},
    {"lost_tail", test_lost_tail},
    {"discard_corrupt", test_discard_corrupt},
};

int main(int argc, char **argv) {
    size_t i, ncases = sizeof CASES / sizeof CASES[0];
    int a, ran = 0;
    for (i = 0; i < ncases; i++) {
        int selected = argc < 2;
        for (a = 1; a < argc; a++)
            if (!strcmp(argv[a], CASES[i].name)) selected = 1;
        if (!selected) continue;
        {
            int before = failures;
            CASES[i].fn();
            printf("%s %s\n", failures == before ? "PASS" : "FAIL", CASES[i].name);
        }
        ran++;
    }
    if (ran == 0) {
        fprintf(stderr, "no such case\n");
        return 2;
    }
    return failures ? 1 : 0;
}
