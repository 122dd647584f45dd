/* The hard state file: term, vote, commit, recovering, replaced atomically by write-temp, fsync, rename,
 * fsync-directory.  A reader sees either the old or the new state, never a mix. */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

#define HS_FIXED_V1 32u /* version 1: no recovering field */
#define HS_FIXED 40u    /* version 2 */
#define HS_NO_VOTE 0xFFFFFFFFu

struct rl_hs {
    char *path; /* <dir>/hardstate */
    char *tmp;  /* <dir>/hardstate.tmp */
    int dirfd;
    int fsync;
    int last_errno;
    char err[RL_ERRLEN];
};

static int hs_fail(rl_hs *hs, int code, int e, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static int hs_fail(rl_hs *hs, int code, int e, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rl__vformat(hs->err, sizeof hs->err, fmt, ap);
    va_end(ap);
    hs->last_errno = e;
    return code;
}

int rl_hs_open(const char *dir, int fsync, rl_hs **out, char *err, size_t errlen) {
    rl_hs *hs = (rl_hs *)calloc(1, sizeof *hs);
    *out = NULL;
    if (!hs) {
        rl__format(err, errlen, "out of memory");
        return RL_ERR_NOMEM;
    }
    hs->dirfd = -1;
    hs->fsync = fsync != 0;
    hs->path = rl__join(dir, "hardstate");
    hs->tmp = rl__join(dir, "hardstate.tmp");
    if (!hs->path || !hs->tmp) {
        rl_hs_close(hs);
        rl__format(err, errlen, "out of memory");
        return RL_ERR_NOMEM;
    }
    hs->dirfd = rl__open(dir, O_RDONLY | O_DIRECTORY, 0);
    if (hs->dirfd < 0) {
        rl__format(err, errlen, "cannot open directory %s: %s", dir, strerror(errno));
        rl_hs_close(hs);
        return RL_ERR_IO;
    }
    *out = hs;
    return RL_OK;
}

void rl_hs_close(rl_hs *hs) {
    if (!hs) return;
    if (hs->dirfd >= 0) close(hs->dirfd);
    free(hs->path);
    free(hs->tmp);
    free(hs);
}

const char *rl_hs_errmsg(const rl_hs *hs) { return hs ? hs->err : "no hard state store"; }
int rl_hs_errno(const rl_hs *hs) { return hs ? hs->last_errno : 0; }

int rl_hs_load(rl_hs *hs, uint64_t *term, uint64_t *commit, uint64_t *recovering, char *vote,
               size_t vote_cap, int64_t *vote_len, int *found) {
    uint8_t buf[HS_FIXED + RL_MAX_VOTE + 4 + 1];
    size_t n = 0, fixed;
    uint32_t vlen, version;
    int fd;
    *term = *commit = *recovering = 0;
    *vote_len = -1;
    *found = 0;
    fd = open(hs->path, O_RDONLY);
    if (fd < 0) {
        if (errno == ENOENT) return RL_OK;
        return hs_fail(hs, RL_ERR_IO, errno, "cannot open %s: %s", hs->path, strerror(errno));
    }
    while (n < sizeof buf) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0) {
            if (errno == EINTR) continue;
            close(fd);
            return hs_fail(hs, RL_ERR_IO, errno, "cannot read %s: %s", hs->path, strerror(errno));
        }
        if (r == 0) break;
        n += (size_t)r;
    }
    close(fd);
    if (n < HS_FIXED_V1 + 4)
        return hs_fail(hs, RL_ERR_CORRUPT, 0, "corrupt hard state: %s is %zu bytes, cut short",
                       hs->path, n);
    if (memcmp(buf, RL_HS_MAGIC, 8) != 0)
        return hs_fail(hs, RL_ERR_CORRUPT, 0, "corrupt hard state: bad magic in %s at offset 0",
                       hs->path);
    version = rl__get32(buf + 8);
    if (version != 1 && version != RL_HS_VERSION)
        return hs_fail(hs, RL_ERR_CORRUPT, 0,
                       "hard state %s has unsupported format version %u at offset 8", hs->path,
                       (unsigned)version);
    fixed = version == 1 ? HS_FIXED_V1 : HS_FIXED;
    vlen = rl__get32(buf + 12);
    {
        size_t body = fixed + (vlen == HS_NO_VOTE ? 0 : vlen);
        if (vlen != HS_NO_VOTE && vlen > RL_MAX_VOTE)
            return hs_fail(hs, RL_ERR_CORRUPT, 0,
                           "corrupt hard state: vote length %u at offset 12 of %s is too large",
                           (unsigned)vlen, hs->path);
        if (n != body + 4)
            return hs_fail(hs, RL_ERR_CORRUPT, 0,
                           "corrupt hard state: %s is %zu bytes, expected %zu", hs->path, n,
                           body + 4);
        if (rl_crc32c(0, buf, body) != rl__get32(buf + body))
            return hs_fail(hs, RL_ERR_CORRUPT, 0,
                           "corrupt hard state: CRC mismatch in %s at offset %zu", hs->path, body);
        if (vlen != HS_NO_VOTE) {
            if (vlen > vote_cap)
                return hs_fail(hs, RL_ERR_CORRUPT, 0, "vote of %u bytes in %s exceeds the buffer",
                               (unsigned)vlen, hs->path);
            memcpy(vote, buf + fixed, vlen);
            *vote_len = vlen;
        }
    }
    *term = rl__get64(buf + 16);
    *commit = rl__get64(buf + 24);
    if (version != 1) *recovering = rl__get64(buf + 32);
    *found = 1;
    return RL_OK;
}

int rl_hs_save(rl_hs *hs, uint64_t term, uint64_t commit, uint64_t recovering, const char *vote,
               int64_t vote_len) {
    uint8_t buf[HS_FIXED + RL_MAX_VOTE + 4];
    size_t body;
    int fd, e;
    if (vote_len < -1 || vote_len > (int64_t)RL_MAX_VOTE || (vote_len > 0 && !vote))
        return hs_fail(hs, RL_ERR_INVAL, 0, "vote must be at most %u bytes", RL_MAX_VOTE);
    memcpy(buf, RL_HS_MAGIC, 8);
    rl__put32(buf + 8, RL_HS_VERSION);
    rl__put32(buf + 12, vote_len < 0 ? HS_NO_VOTE : (uint32_t)vote_len);
    rl__put64(buf + 16, term);
    rl__put64(buf + 24, commit);
    rl__put64(buf + 32, recovering);
    body = HS_FIXED;
    if (vote_len > 0) {
        memcpy(buf + HS_FIXED, vote, (size_t)vote_len);
        body += (size_t)vote_len;
    }
    rl__put32(buf + body, rl_crc32c(0, buf, body));
    fd = rl__open(hs->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return hs_fail(hs, RL_ERR_IO, errno, "cannot create %s: %s", hs->tmp, strerror(errno));
    if (rl__pwrite_all(fd, buf, body + 4, 0) < 0 || (hs->fsync && rl__fsync(fd) < 0)) {
        e = errno;
        close(fd);
        unlink(hs->tmp);
        return hs_fail(hs, RL_ERR_IO, e, "cannot write %s: %s", hs->tmp, strerror(e));
    }
    if (close(fd) < 0) {
        e = errno;
        unlink(hs->tmp);
        return hs_fail(hs, RL_ERR_IO, e, "cannot close %s: %s", hs->tmp, strerror(e));
    }
    if (rl__rename(hs->tmp, hs->path) < 0) {
        e = errno;
        unlink(hs->tmp);
        return hs_fail(hs, RL_ERR_IO, e, "cannot rename %s to %s: %s", hs->tmp, hs->path,
                       strerror(e));
    }
    if (hs->fsync && rl__fsync(hs->dirfd) < 0)
        return hs_fail(hs, RL_ERR_IO, errno,
                       "fsync of the directory of %s failed: %s; the new state may not be durable",
                       hs->path, strerror(errno));
    return RL_OK;
}
