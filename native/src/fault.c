/* System call wrappers with process-wide fault injection for tests, plus small helpers
 * (error formatting, little-endian access, path joining). */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"

/* Fault plan per operation: `after` successful calls remain before failures begin; then `count`
 * calls fail (-1 = forever) with errno `err`.  Test-only and not thread-safe by design. */
static struct {
    int armed;
    int after;
    int err;
    int count;
} faults[RL_FAULT_NOPS];

void rl_fault_set(int op, int after, int err, int count) {
    if (op < 0 || op >= RL_FAULT_NOPS) return;
    faults[op].armed = 1;
    faults[op].after = after < 0 ? 0 : after;
    faults[op].err = err;
    faults[op].count = count;
}

void rl_fault_clear(void) { memset(faults, 0, sizeof faults); }

/* 1 when this call of op must fail (errno is set). */
static int fault_hit(int op) {
    if (!faults[op].armed) return 0;
    if (faults[op].after > 0) {
        faults[op].after--;
        return 0;
    }
    if (faults[op].count == 0) {
        faults[op].armed = 0;
        return 0;
    }
    if (faults[op].count > 0) faults[op].count--;
    errno = faults[op].err;
    return 1;
}

int rl__open(const char *path, int flags, int mode) {
    int fd;
    if ((flags & O_CREAT) && fault_hit(RL_FAULT_OPEN)) return -1;
    do {
        fd = open(path, flags, mode);
    } while (fd < 0 && errno == EINTR);
    return fd;
}

int rl__pwrite_all(int fd, const void *buf, size_t len, uint64_t off) {
    const uint8_t *p = (const uint8_t *)buf;
    if (len > 1 && fault_hit(RL_FAULT_SHORT_WRITE)) {
        /* A write that got half way before the device filled up: leave the partial bytes. */
        int saved = errno;
        ssize_t ignored = pwrite(fd, p, len / 2, (off_t)off);
        (void)ignored;
        errno = saved;
        return -1;
    }
    if (fault_hit(RL_FAULT_WRITE)) return -1;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int rl__pread_all(int fd, void *buf, size_t len, uint64_t off) {
    uint8_t *p = (uint8_t *)buf;
    while (len > 0) {
        ssize_t n = pread(fd, p, len, (off_t)off);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (n == 0) {
            errno = EIO; /* the file is shorter than the index says */
            return -1;
        }
        p += n;
        len -= (size_t)n;
        off += (uint64_t)n;
    }
    return 0;
}

int rl__fdatasync(int fd) {
    int r;
    if (fault_hit(RL_FAULT_FSYNC)) return -1;
    do {
        r = fdatasync(fd);
    } while (r < 0 && errno == EINTR);
    return r;
}

int rl__fsync(int fd) {
    int r;
    if (fault_hit(RL_FAULT_FSYNC)) return -1;
    do {
        r = fsync(fd);
    } while (r < 0 && errno == EINTR);
    return r;
}

int rl__ftruncate(int fd, uint64_t len) {
    int r;
    if (fault_hit(RL_FAULT_TRUNCATE)) return -1;
    do {
        r = ftruncate(fd, (off_t)len);
    } while (r < 0 && errno == EINTR);
    return r;
}

int rl__rename(const char *from, const char *to) {
    if (fault_hit(RL_FAULT_RENAME)) return -1;
    return rename(from, to);
}

void rl__vformat(char *buf, size_t len, const char *fmt, va_list ap) {
    if (!buf || len == 0) return;
    vsnprintf(buf, len, fmt, ap);
}

void rl__format(char *buf, size_t len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rl__vformat(buf, len, fmt, ap);
    va_end(ap);
}

int rl__fail(rl_log *log, int code, int errno_value, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    rl__vformat(log->err, sizeof log->err, fmt, ap);
    va_end(ap);
    log->last_errno = errno_value;
    return code;
}

void rl__put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

void rl__put64(uint8_t *p, uint64_t v) {
    rl__put32(p, (uint32_t)v);
    rl__put32(p + 4, (uint32_t)(v >> 32));
}

uint32_t rl__get32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

uint64_t rl__get64(const uint8_t *p) { return (uint64_t)rl__get32(p) | (uint64_t)rl__get32(p + 4) << 32; }

char *rl__join(const char *dir, const char *name) {
    size_t a = strlen(dir), b = strlen(name);
    char *out = (char *)malloc(a + b + 2);
    if (!out) return NULL;
    memcpy(out, dir, a);
    out[a] = '/';
    memcpy(out + a + 1, name, b + 1);
    return out;
}
