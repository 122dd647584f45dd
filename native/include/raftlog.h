/*
 * raftlog: a segmented, append-only Raft log and a hard-state file, in C99 with libc/POSIX only.
 *
 * On-disk layout of a log directory
 * ---------------------------------
 *   <first index, 20 digits>.seg   segment files, e.g. 00000000000000000001.seg
 *   hardstate                      term, vote, commit, recovering (see rl_hs_*), replaced atomically
 *   hardstate.tmp                  a save in progress; ignored on load
 *   syncmark                       the sync mark: the last index a sync made durable (below)
 *
 * A segment is a 32-byte header followed by records:
 *
 *   segment header (little-endian)          record (engine/codec.py, little-endian)
 *   0  8  magic "RAFTSEG\0"                 0   4  crc32c of bytes [4, 25 + length)
 *   8  4  format version (1)                4   4  length of the payload
 *   12 4  header size (32)                  8   8  index
 *   16 8  first index of the segment        16  8  term
 *   24 4  reserved, 0                       24  1  kind
 *   28 4  crc32c of bytes [0, 28)           25  n  payload
 *
 * Records are exactly the wire format of a batch of entries, so a batch received from a leader
 * is appended as it came (rl_append_records) after its CRCs are checked.
 *
 * Durability.  Appends go to the page cache; rl_sync() fdatasyncs the segments written since the
 * last sync (after an open, the last segment counts as written: what a crashed process left in
 * the page cache may not be on the device yet).  Structural changes (creating a segment, removing segments, truncating a suffix,
 * resetting the log, repairing a torn tail) are made durable at once when fsync is on, so that
 * after a crash the segments always chain (each starts where the previous one ends) and no stale
 * suffix can reappear behind newer entries.  With fsync off nothing is flushed; writes are still
 * ordered.
 *
 * Sync mark.  After every successful rl_sync (on the caller's thread or the syncer's) the log
 * writes the last index that sync made durable to the file `syncmark`, with one pwrite at offset
 * 0 after the fdatasyncs returned and no flush of its own (one small write per sync group; it is
 * skipped when the value would not rise).  So a value on the device never claims more than was
 * durable: at worst it is older (lower) than the truth.  rl_truncate_suffix(i) lowers it to i - 1
 * (when higher) before it cuts anything, flushed when fsync is on, so no later sync can leave a
 * mark above a suffix that is gone; rl_reset(n) sets it to n - 1 (lowering first, or raising
 * after the reset); rl_compact_prefix leaves it; a sync never lowers it (so after an open that
 * found the log ending below the mark, the mark keeps saying so until the log is durable past it
 * again or is truncated).  rl_close flushes it when fsync is on.  With fsync off the mark is
 * still written on every sync (the page cache survives a process crash, and so does the mark)
 * but never flushed.  rl_synced_index_at_open() gives what the mark said when the log was
 * opened: when the recovered log ends below it, entries that a sync had made durable (and the
 * node may have acknowledged) are gone.
 *
 *   syncmark (little-endian, 32 bytes)
 *   0 8 magic "RAFTSYN\0" | 8 4 version (1) | 12 4 size (32) | 16 8 index | 24 4 reserved, 0
 *   28 4 crc32c of bytes [0, 28)
 *
 * rl_open creates the file empty when it is missing.  A missing or empty file reads as 0 (no
 * record: a directory made by an older version); a bad one reads as 0 too, is reported as a
 * repair (first_lost 0) and cut to 0 bytes, never an error.
 *
 * Recovery (rl_open).  Every segment is scanned and every CRC checked; the offset index is rebuilt
 * in memory.  In the LAST segment a torn tail -- a record cut short, or a bad record that no valid
 * record follows -- is truncated and reported (rl_recovery_*).  Anything else that is bad (a bad
 * record followed by a valid one, a bad record or header in an earlier segment, a gap between
 * segments) fails with RL_ERR_CORRUPT and a message naming the file and the offset -- unless
 * rl_options.discard_corrupt_suffix is set: then the log is cut at the first damage instead,
 * durably (the later segments removed newest first, then the damaged segment truncated at the
 * bad record, or removed when its header is bad or it does not chain), and every file touched is
 * reported as a repair.  Every repair names the first index it lost (rl_repair.first_lost).  A
 * directory whose only segment holds just a header starting at N is an empty log: first index N,
 * last N - 1 (what rl_reset leaves).
 *
 * Errors.  Functions return RL_OK (0) or an rl_status code; the log handle then holds a message
 * (rl_errmsg) naming the file and offset, and the errno of the failed system call (rl_errno).
 * A failed write leaves the log as it was (the partial write is cut off again).  A failed fsync
 * poisons the handle: later writes and syncs fail with RL_ERR_STATE until the log is reopened,
 * because after a failed fsync the kernel may have dropped the dirty pages (retrying would lie).
 *
 * Threads.  A handle is used by one thread at a time; the library has no locks, except the
 * syncer (rl_syncer_*), which hands a handle to its own thread for one rl_sync().  The fault
 * injection switches (rl_fault_*) are process-wide and meant for tests only.
 *
 * Everything between the RAFTLOG_CDEF markers is also the cffi cdef of the Python binding
 * (engine/storage/_native_build.py), so it stays plain declarations: no macros, no attributes.
 */
#ifndef RAFTLOG_H
#define RAFTLOG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* RAFTLOG_CDEF_BEGIN */

/* Status codes.  Every int-returning function returns one of these. */
enum rl_status {
    RL_OK = 0,
    RL_ERR_IO = 1,      /* a system call failed (ENOSPC, EIO, ...); rl_errno() tells which */
    RL_ERR_CORRUPT = 2, /* the files on disk are corrupt; the message names file and offset */
    RL_ERR_INVAL = 3,   /* the caller passed bad arguments (gap, non-contiguous indexes, ...) */
    RL_ERR_RANGE = 4,   /* an index outside the stored range */
    RL_ERR_BATCH = 5,   /* a pre-encoded batch is malformed (truncated, bad CRC, oversized) */
    RL_ERR_NOMEM = 6,   /* malloc failed */
    RL_ERR_STATE = 7    /* handle poisoned by a failed fsync (reopen to recover) */
};

/* Fault injection targets (tests only). */
enum rl_fault_op {
    RL_FAULT_WRITE = 0,    /* pwrite */
    RL_FAULT_FSYNC = 1,    /* fsync / fdatasync */
    RL_FAULT_OPEN = 2,     /* open with O_CREAT */
    RL_FAULT_RENAME = 3,   /* rename */
    RL_FAULT_TRUNCATE = 4, /* ftruncate */
    RL_FAULT_SHORT_WRITE = 5, /* pwrite writes only half of what was asked, then fails */
    RL_FAULT_NOPS = 6
};

typedef struct rl_log rl_log;
typedef struct rl_hs rl_hs;

typedef struct rl_options {
    uint64_t segment_size; /* roll to a new segment when a batch would grow the active one past
                              this; 0 = 64 MiB.  A larger batch gets a segment of its own. */
    int fsync;             /* nonzero: rl_sync and structural changes flush to the device */
    int discard_corrupt_suffix; /* nonzero: corruption before the tail (a bad record followed by
                              valid ones, a bad record or header in an earlier segment, segments
                              that do not chain) cuts the log at the first damage, durably, and
                              is reported as a repair, instead of failing with RL_ERR_CORRUPT */
} rl_options;

/* One repair done by recovery. */
typedef struct rl_repair {
    char file[64];    /* file name, relative to the log directory (a segment, or "syncmark") */
    uint64_t offset;  /* where the dropped bytes started */
    uint64_t bytes;   /* how many bytes were dropped */
    int removed;      /* 1 when the whole file was removed (torn creation, or discarded) */
    uint64_t first_lost; /* the first log index this repair lost: the index the first dropped
                            record had or would have had (for a segment that does not chain,
                            the first missing index); afterwards that file holds no entry at or
                            past it.  0 when no entry was lost (an unreadable sync mark). */
    char reason[160]; /* what was wrong, e.g. "torn tail: record cut short" */
} rl_repair;

/* Open (creating the first segment if the directory has none) and recover the log in `dir`,
 * which must exist.  On failure *out is NULL and `err` (if not NULL) holds the message. */
int rl_open(const char *dir, const rl_options *opts, rl_log **out, char *err, size_t errlen);

/* Close every file and free the handle (NULL is a no-op).  Does not sync the segments; flushes
 * the sync mark when fsync is on and it was written since.  Returns RL_OK or RL_ERR_IO if that
 * flush or a close failed; the handle is freed either way. */
int rl_close(rl_log *log);

const char *rl_errmsg(const rl_log *log); /* message of the last failure on this handle */
int rl_errno(const rl_log *log);          /* errno of the last failed system call, or 0 */

uint64_t rl_first_index(const rl_log *log); /* last_index + 1 when empty */
uint64_t rl_last_index(const rl_log *log);  /* first_index - 1 when empty */
size_t rl_segment_count(const rl_log *log);

/* Append a batch of encoded records (codec format) in one write.  The records must carry
 * contiguous indexes starting at most at last_index + 1 and at least at first_index; existing
 * entries at or after the first one are replaced (suffix truncation first).  Every CRC is
 * checked before anything is written: RL_ERR_BATCH names the offset of the first bad record. */
int rl_append_records(rl_log *log, const uint8_t *data, size_t len);

/* Same, from fields: n entries with indexes[k] (must be indexes[0] + k), terms[k], kinds[k], and
 * payloads of lens[k] bytes laid end to end in `payload` (payload_len == sum of lens). */
int rl_append_parts(rl_log *log, size_t n, const uint64_t *indexes, const uint64_t *terms,
                    const uint8_t *kinds, const uint32_t *lens, const uint8_t *payload,
                    size_t payload_len);

/* Make every earlier write durable (fdatasync of written segments; segment creations and
 * removals were flushed when made), then record the last index as the sync mark (see above).
 * A failed write of the mark does not fail the sync (the entries are durable; the mark on disk
 * then claims less, or reads as 0); the next sync writes it again. */
int rl_sync(rl_log *log);

/* Bytes that rl_read needs for the records with indexes in [lo, hi). */
int rl_read_size(rl_log *log, uint64_t lo, uint64_t hi, uint64_t *size);

/* Copy the records with indexes in [lo, hi) into buf (cap bytes, at least rl_read_size), checking
 * every CRC.  Optional outputs (NULL to skip), one slot per record: term, kind, offset of the
 * payload in buf, payload length. */
int rl_read(rl_log *log, uint64_t lo, uint64_t hi, uint8_t *buf, size_t cap, uint64_t *terms,
            uint8_t *kinds, uint64_t *payload_offsets, uint32_t *payload_lens);

/* Term of the entry at index (from the in-memory index; no I/O). */
int rl_term_at(const rl_log *log, uint64_t index, uint64_t *term);

/* Remove every entry with index >= index (no entry goes past the end; clamped to first_index).
 * First lowers the sync mark to index - 1 when it is higher, even past the end (a failure then
 * changes nothing). */
int rl_truncate_suffix(rl_log *log, uint64_t index);

/* Remove whole segments whose entries all have index <= index, never the segment holding the
 * last entry: a non-empty log stays non-empty and rl_last_index does not change.  Afterwards
 * rl_first_index is at most index + 1 (and at most the last index); it may be lower, as only
 * whole segments go.  Removals are durable on return when fsync is on. */
int rl_compact_prefix(rl_log *log, uint64_t index);

/* Drop every entry and restart the log at next_index (>= 1, else RL_ERR_INVAL): afterwards
 * rl_first_index == next_index and rl_last_index == next_index - 1, and the next append must
 * start at next_index.  For a follower that installs a snapshot ahead of its log.  On disk the
 * directory then holds one segment, <next_index>.seg, with only its header.
 *
 * Steps (each flushed before the next when fsync is on, so the result is durable on return):
 * remove every segment but the oldest, newest first; cut the oldest to 0 bytes; rename it to
 * <next_index>.seg; write its header.  A crash leaves a prefix of the old log (every segment
 * removal is a suffix truncation), or a zero-length only segment, which recovery removes and
 * recreates empty at the index its name says: the old first index (the log is then empty there)
 * or next_index (the reset is complete).  A failure before the oldest segment is cut returns
 * RL_ERR_IO with a shorter log still usable; a failure after it poisons the handle
 * (RL_ERR_STATE afterwards; reopening completes or undoes the cut as just described).
 * The sync mark becomes next_index - 1: lowered (and flushed) before step 1 when higher, raised
 * after step 4 when lower. */
int rl_reset(rl_log *log, uint64_t next_index);

/* What recovery repaired when this handle was opened. */
size_t rl_recovery_count(const rl_log *log);
int rl_recovery_get(const rl_log *log, size_t i, rl_repair *out);

/* The sync mark as it was when this handle was opened: the last index this log had recorded as
 * durable; 0 when it kept no record (no mark file, or an unreadable one). */
uint64_t rl_synced_index_at_open(const rl_log *log);

/* CRC32C (Castagnoli).  `crc` is the running value: rl_crc32c(rl_crc32c(0, a), b) equals the CRC
 * of a followed by b, as with zlib's crc32. */
uint32_t rl_crc32c(uint32_t crc, const void *data, size_t len);
uint32_t rl_crc32c_table(uint32_t crc, const void *data, size_t len); /* always the table */
uint32_t rl_crc32c_hw(uint32_t crc, const void *data, size_t len); /* SSE4.2, else the table */
int rl_crc32c_hw_available(void);   /* 1 when the CPU has SSE4.2 and it was compiled in */
void rl_crc32c_force_table(int on); /* nonzero: rl_crc32c uses the table even with SSE4.2 */

/* Encode n entries (fields as in rl_append_parts) into out (cap >= 25 * n + payload_len).
 * Returns the bytes written, 0 when the arguments are inconsistent. */
size_t rl_encode_parts(size_t n, const uint64_t *indexes, const uint64_t *terms,
                       const uint8_t *kinds, const uint32_t *lens, const uint8_t *payload,
                       size_t payload_len, uint8_t *out, size_t cap);

/* Check a batch of records (lengths and CRCs).  Returns RL_OK with *count records, or
 * RL_ERR_BATCH with *bad_offset at the first bad record and a message in err. */
int rl_batch_scan(const uint8_t *data, size_t len, size_t *count, size_t *bad_offset, char *err,
                  size_t errlen);

/* Split a batch that rl_batch_scan accepted into fields, one slot per record (n = its count). */
void rl_batch_fields(const uint8_t *data, size_t len, size_t n, uint64_t *indexes, uint64_t *terms,
                     uint8_t *kinds, uint64_t *payload_offsets, uint32_t *payload_lens);

/* Hard state: term, vote (node id bytes, or none), commit and recovering in the file
 * `hardstate`.  Version 2 (written):
 *   0 8 magic "RAFTHST\0" | 8 4 version (2) | 12 4 vote length (0xFFFFFFFF = no vote)
 *   16 8 term | 24 8 commit | 32 8 recovering | 40 n vote | 40+n 4 crc32c of bytes [0, 40 + n)
 * Version 1 (still loaded, recovering = 0): the same without the recovering field, so the vote
 * starts at 32 and the CRC covers [0, 32 + n).
 * Saved by writing hardstate.tmp, fsync, rename over hardstate, fsync of the directory. */
int rl_hs_open(const char *dir, int fsync, rl_hs **out, char *err, size_t errlen);
void rl_hs_close(rl_hs *hs);
const char *rl_hs_errmsg(const rl_hs *hs);
int rl_hs_errno(const rl_hs *hs);
/* *found = 0 (and zeros) when nothing was saved.  *vote_len = -1 when there is no vote;
 * a vote longer than vote_cap fails with RL_ERR_CORRUPT (the maximum saved is 4096 bytes). */
int rl_hs_load(rl_hs *hs, uint64_t *term, uint64_t *commit, uint64_t *recovering, char *vote,
               size_t vote_cap, int64_t *vote_len, int *found);
/* vote_len = -1 for no vote; at most 4096.  Always writes version 2. */
int rl_hs_save(rl_hs *hs, uint64_t term, uint64_t commit, uint64_t recovering, const char *vote,
               int64_t vote_len);

/* Syncer: a thread that runs rl_sync() for a caller that must not block (an event loop), and
 * reports the end through a pipe.  rl_syncer_submit(s, log) hands `log` to the thread: from then
 * until rl_syncer_collect() returns RL_OK the caller must not touch that handle.  When the fd of
 * rl_syncer_fd() turns readable, rl_syncer_collect() gives rl_sync's status (the log's errmsg
 * tells more on failure).  One job at a time: submitting while busy gives RL_ERR_STATE;
 * collecting before the end gives RL_ERR_RANGE (try again when readable); rl_syncer_wait()
 * blocks until the end instead.  rl_syncer_close() finishes a job in flight, joins the thread
 * and frees everything (NULL is a no-op). */
typedef struct rl_syncer rl_syncer;
int rl_syncer_open(rl_syncer **out);
int rl_syncer_fd(const rl_syncer *s);
int rl_syncer_submit(rl_syncer *s, rl_log *log);
int rl_syncer_collect(rl_syncer *s, int *result);
int rl_syncer_wait(rl_syncer *s, int *result);
void rl_syncer_close(rl_syncer *s);

/* Fault injection (tests only, process-wide, not thread-safe): after `after` more successful
 * calls of `op`, the next `count` calls (-1 = all) fail with errno `err`. */
void rl_fault_set(int op, int after, int err, int count);
void rl_fault_clear(void);

/* RAFTLOG_CDEF_END */

#ifdef __cplusplus
}
#endif

#endif /* RAFTLOG_H */
