/*
 * rl_syncer: one POSIX thread that runs rl_sync() for a caller that must not block, and
 * reports the end through a pipe the caller's event loop watches.
 *
 * The handover is one job slot guarded by a mutex: rl_syncer_submit() fills it and signals the
 * thread; the thread runs rl_sync(log), stores the result, empties the slot and writes one byte
 * to the pipe; rl_syncer_collect() reads the byte and hands the result back.  While a job is in
 * flight the log belongs to the syncer thread: the caller must not use the handle at all until
 * it has collected the result (rl_log has no locks).  No Python object and no GIL is involved.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

struct rl_syncer {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    pthread_t thread;
    int fds[2];        /* pipe: [0] watched by the caller, [1] written by the thread */
    rl_log *job;       /* guarded by mu: the log to sync, NULL when none is waiting */
    int busy;          /* guarded by mu: a job was submitted and not yet collected */
    int done;          /* guarded by mu: the job in flight has finished */
    int result;        /* guarded by mu: rl_sync's status for the finished job */
    int stop;          /* guarded by mu: the thread must exit */
};

static void *syncer_main(void *arg) {
    rl_syncer *s = arg;
    pthread_mutex_lock(&s->mu);
    for (;;) {
        while (s->job == NULL && !s->stop) pthread_cond_wait(&s->cv, &s->mu);
        if (s->job == NULL && s->stop) break;
        rl_log *log = s->job;
        s->job = NULL;
        pthread_mutex_unlock(&s->mu);
        int rc = rl_sync(log);
        pthread_mutex_lock(&s->mu);
        s->result = rc;
        s->done = 1;
        pthread_cond_broadcast(&s->cv); /* rl_syncer_wait() */
        {
            const char byte = 1;
            ssize_t w;
            do {
                w = write(s->fds[1], &byte, 1);
            } while (w < 0 && errno == EINTR);
            /* EAGAIN cannot happen: at most one byte is ever unread (one job at a time). */
        }
    }
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static int set_flags(int fd) {
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0) return -1;
    if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0) return -1;
    return 0;
}

int rl_syncer_open(rl_syncer **out) {
    rl_syncer *s;
    *out = NULL;
    s = calloc(1, sizeof *s);
    if (s == NULL) return RL_ERR_NOMEM;
    if (pipe(s->fds) < 0) {
        free(s);
        return RL_ERR_IO;
    }
    if (set_flags(s->fds[0]) < 0 || set_flags(s->fds[1]) < 0) goto fail_fds;
    if (pthread_mutex_init(&s->mu, NULL) != 0) goto fail_fds;
    if (pthread_cond_init(&s->cv, NULL) != 0) goto fail_mu;
    if (pthread_create(&s->thread, NULL, syncer_main, s) != 0) goto fail_cv;
    *out = s;
    return RL_OK;
fail_cv:
    pthread_cond_destroy(&s->cv);
fail_mu:
    pthread_mutex_destroy(&s->mu);
fail_fds:
    close(s->fds[0]);
    close(s->fds[1]);
    free(s);
    return RL_ERR_IO;
}

int rl_syncer_fd(const rl_syncer *s) { return s->fds[0]; }

int rl_syncer_submit(rl_syncer *s, rl_log *log) {
    int rc = RL_OK;
    if (log == NULL) return RL_ERR_INVAL;
    pthread_mutex_lock(&s->mu);
    if (s->busy || s->stop) {
        rc = RL_ERR_STATE;
    } else {
        s->busy = 1;
        s->done = 0;
        s->job = log;
        pthread_cond_broadcast(&s->cv);
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rl_syncer_collect(rl_syncer *s, int *result) {
    int rc;
    pthread_mutex_lock(&s->mu);
    if (!s->busy) {
        rc = RL_ERR_STATE;
    } else if (!s->done) {
        rc = RL_ERR_RANGE; /* not finished yet: call again once the fd is readable */
    } else {
        char buf[8];
        ssize_t r;
        do {
            r = read(s->fds[0], buf, sizeof buf);
        } while (r < 0 && errno == EINTR);
        *result = s->result;
        s->busy = 0;
        s->done = 0;
        rc = RL_OK;
    }
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int rl_syncer_wait(rl_syncer *s, int *result) {
    pthread_mutex_lock(&s->mu);
    if (!s->busy) {
        pthread_mutex_unlock(&s->mu);
        return RL_ERR_STATE;
    }
    while (!s->done) pthread_cond_wait(&s->cv, &s->mu);
    pthread_mutex_unlock(&s->mu);
    return rl_syncer_collect(s, result);
}

void rl_syncer_close(rl_syncer *s) {
    if (s == NULL) return;
    pthread_mutex_lock(&s->mu);
    s->stop = 1;
    pthread_cond_broadcast(&s->cv);
    pthread_mutex_unlock(&s->mu);
    pthread_join(s->thread, NULL); /* finishes a job in flight first */
    pthread_cond_destroy(&s->cv);
    pthread_mutex_destroy(&s->mu);
    close(s->fds[0]);
    close(s->fds[1]);
    free(s);
}
