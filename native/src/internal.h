/* Private declarations shared by the raftlog sources.  Not part of the API. */
#ifndef RAFTLOG_INTERNAL_H
#define RAFTLOG_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "raftlog.h"

#define RL_RECORD_HEADER 25u
#define RL_SEGMENT_HEADER 32u
#define RL_FORMAT_VERSION 1u
#define RL_MAX_PAYLOAD (64u << 20)        /* same bound as engine/codec.py MAX_RECORD_PAYLOAD */
#define RL_MAX_BATCH ((size_t)1 << 30)    /* one append writes at most 1 GiB */
#define RL_DEFAULT_SEGMENT ((uint64_t)64 << 20)
#define RL_MAX_SEGMENT ((uint64_t)1 << 31)
#define RL_SEGMENT_NAME_LEN 24            /* 20 digits + ".seg" */
#define RL_ERRLEN 512
#define RL_MAX_VOTE 4096
#define RL_HS_VERSION 2u                  /* hard state format written; version 1 still loads */
#define RL_SYNCMARK_SIZE RL_SEGMENT_HEADER /* same layout (rl__encode_fixed32) */
#define RL_SYNCMARK_FILE "syncmark"

static const char RL_SEGMENT_MAGIC[8] = {'R', 'A', 'F', 'T', 'S', 'E', 'G', '\0'};
static const char RL_HS_MAGIC[8] = {'R', 'A', 'F', 'T', 'H', 'S', 'T', '\0'};
static const char RL_SYNCMARK_MAGIC[8] = {'R', 'A', 'F', 'T', 'S', 'Y', 'N', '\0'};

/* One segment file.  Invariant: offsets[k] is the file offset of the record with index
 * first + k, terms[k] its term, for k < count; size is the file size (end of the last record). */
typedef struct rl_segment {
    char name[RL_SEGMENT_NAME_LEN + 1];
    int fd;
    uint64_t first;
    uint64_t count;
    uint64_t cap;
    uint64_t *offsets;
    uint64_t *terms;
    uint64_t size;
    int dirty; /* written since the last fdatasync */
} rl_segment;

struct rl_log {
    char *dir;
    int dirfd;
    int fsync;
    uint64_t segment_size;
    /* Invariant: segs[i + 1].first == segs[i].first + segs[i].count; nsegs >= 1 once open. */
    rl_segment *segs;
    size_t nsegs;
    size_t segcap;
    uint8_t *scratch; /* encode buffer of rl_append_parts */
    size_t scratch_cap;
    rl_repair *repairs;
    size_t nrepairs;
    int discard_corrupt; /* rl_options.discard_corrupt_suffix */
    /* The sync mark (file RL_SYNCMARK_FILE, see raftlog.h).  mark: the value on disk (when
     * !mark_unknown); mark_at_open: what it said when the log was opened; mark_unflushed: written
     * since the mark file was last fdatasynced. */
    int markfd;
    uint64_t mark;
    uint64_t mark_at_open;
    int mark_unknown;
    int mark_unflushed;
    int poisoned;
    int last_errno;
    char err[RL_ERRLEN];
};

/* Formats a message into log->err, remembers errno_value, returns code. */
int rl__fail(rl_log *log, int code, int errno_value, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
void rl__vformat(char *buf, size_t len, const char *fmt, va_list ap);
void rl__format(char *buf, size_t len, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Little-endian helpers. */
void rl__put32(uint8_t *p, uint32_t v);
void rl__put64(uint8_t *p, uint64_t v);
uint32_t rl__get32(const uint8_t *p);
uint64_t rl__get64(const uint8_t *p);

/* System calls through the fault injector (fault.c).  Each returns like the libc call and sets
 * errno.  rl__pwrite_all writes everything or fails (-1, errno set). */
int rl__open(const char *path, int flags, int mode);
int rl__pwrite_all(int fd, const void *buf, size_t len, uint64_t off);
int rl__pread_all(int fd, void *buf, size_t len, uint64_t off); /* 0, or -1 (errno; EIO on EOF) */
int rl__fdatasync(int fd);
int rl__fsync(int fd);
int rl__ftruncate(int fd, uint64_t len);
int rl__rename(const char *from, const char *to);

/* Segments (segment.c). */
void rl__segment_name(char *out, uint64_t first);
int rl__parse_segment_name(const char *name, uint64_t *first);
/* The 32-byte layout shared by segment headers and the sync mark: magic, version (1), size (32),
 * value, 0, crc32c of the first 28 bytes. */
void rl__encode_fixed32(uint8_t *out, const char *magic, uint64_t value);
void rl__encode_segment_header(uint8_t *out, uint64_t first);
/* NULL when the header is valid, else what is wrong with it. */
const char *rl__check_segment_header(const uint8_t *hdr, uint64_t *first);
int rl__segment_reserve(rl_segment *seg, uint64_t extra);
void rl__segment_free(rl_segment *seg);
char *rl__join(const char *dir, const char *name);

/* Records (codec.c).  rl__check_record: NULL when the record at data[0..avail) is complete, has
 * the expected index (when expect != 0) and a good CRC; else the reason, with *need set to the
 * bytes the record claims (0 when even the header is cut short). */
const char *rl__check_record(const uint8_t *data, size_t avail, uint64_t expect, uint64_t *need);

/* Recovery (recovery.c): fills log->segs from the directory. */
int rl__recover(rl_log *log);
int rl__create_segment(rl_log *log, uint64_t first);
int rl__add_repair(rl_log *log, const char *file, uint64_t offset, uint64_t bytes, int removed,
                   uint64_t first_lost, const char *reason);

/* Sync mark (log.c).  rl__mark_open opens (creating) the mark file and reads it into
 * log->mark / log->mark_at_open; an unreadable mark counts as 0 and is reported as a repair. */
int rl__mark_open(rl_log *log);
void rl__encode_syncmark(uint8_t *out, uint64_t index);
/* NULL when the RL_SYNCMARK_SIZE bytes are a good mark (*index set), else what is wrong. */
const char *rl__check_syncmark(const uint8_t *rec, uint64_t *index);

#endif
