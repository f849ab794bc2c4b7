/* Issue 18 case 1 as a C host sees it (a prefork server, a dialer forking workers),
 * written from include/tryvox.h only. A client used before fork() (a keep-alive
 * connection on the blocking path and the engine's, a scheduled hangup pending) is used
 * by parent and child at once, ROUNDS times: the parent hangs up ids the server answers
 * 204, the child ids it answers 404, on the three paths (tryvox_hangup,
 * tryvox_hangup_async, tryvox_hangup_many). Every status must be its side's; the
 * parent's pending scheduled hangup never calls back in the child; freeing the client
 * returns in both. Usage: fork BASE_URL. Prints "N failures"; exit 0 when none. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tryvox.h"

#define ROUNDS 10
#define PER_PATH 6

static int failures = 0;
static pid_t parent_pid;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            printf("FAIL [%s] %s:%d: ", getpid() == parent_pid ? "parent" : "child",     \
                   __FILE__, __LINE__);                                                    \
            printf(__VA_ARGS__);                                                           \
            printf("\n");                                                                  \
            fflush(stdout);                                                                \
        }                                                                                  \
    } while (0)

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
static int async_done = 0;
static int async_wrong = 0;
static int async_want = 0;
/* Callbacks of the parent's scheduled hangup that ran in a child. */
static volatile int timer_called_in_child = 0;

static void on_async(void *user_data, const char *call_uuid, int status, int http_status,
                     const char *message) {
    (void)user_data;
    (void)http_status;
    (void)message;
    pthread_mutex_lock(&lock);
    if (status != async_want) {
        async_wrong++;
        printf("async %s: status %d, want %d\n", call_uuid, status, async_want);
    }
    async_done++;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
}

static void on_timer(void *user_data, const char *call_uuid, int status, int http_status,
                     const char *message) {
    (void)user_data;
    (void)call_uuid;
    (void)status;
    (void)http_status;
    (void)message;
    if (getpid() != parent_pid)
        timer_called_in_child = 1;
}

/* Waits until `n` async callbacks arrived, at most 20 s. */
static int wait_async(int n) {
    struct timespec until;
    int ok;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 20;
    pthread_mutex_lock(&lock);
    while (async_done < n)
        if (pthread_cond_timedwait(&cond, &lock, &until) != 0)
            break;
    ok = async_done >= n;
    pthread_mutex_unlock(&lock);
    return ok;
}

/* One side's rounds: ids with `prefix`, every status `want`. */
static void rounds(tryvox_client *c, const char *prefix, int want) {
    char ids[PER_PATH][96];
    const char *ptrs[PER_PATH];
    int statuses[PER_PATH];
    int r, k, rc;
    pthread_mutex_lock(&lock);
    async_done = 0;
    async_wrong = 0;
    async_want = want;
    pthread_mutex_unlock(&lock);
    for (r = 0; r < ROUNDS; r++) {
        for (k = 0; k < PER_PATH; k++) {
            snprintf(ids[k], sizeof ids[k], "%ssync-%d-%d-%d", prefix, (int)getpid(), r, k);
            rc = tryvox_hangup(c, ids[k]);
            CHECK(rc == want, "sync %s: %d (%s), want %d", ids[k], rc, tryvox_last_error(), want);
        }
        for (k = 0; k < PER_PATH; k++) {
            snprintf(ids[k], sizeof ids[k], "%sasync-%d-%d-%d", prefix, (int)getpid(), r, k);
            rc = tryvox_hangup_async(c, ids[k], on_async, NULL);
            CHECK(rc == TRYVOX_OK, "async %s not queued: %d", ids[k], rc);
        }
        for (k = 0; k < PER_PATH; k++) {
            snprintf(ids[k], sizeof ids[k], "%sbulk-%d-%d-%d", prefix, (int)getpid(), r, k);
            ptrs[k] = ids[k];
            statuses[k] = -1;
        }
        rc = tryvox_hangup_many(c, ptrs, PER_PATH, statuses, 4);
        CHECK(rc == TRYVOX_OK, "hangup_many: %d (%s)", rc, tryvox_last_error());
        for (k = 0; k < PER_PATH; k++)
            CHECK(statuses[k] == want, "bulk %s: %d, want %d", ids[k], statuses[k], want);
    }
    CHECK(wait_async(ROUNDS * PER_PATH), "async: %d of %d callbacks", async_done,
          ROUNDS * PER_PATH);
    CHECK(async_wrong == 0, "async: %d wrong statuses", async_wrong);
}

int main(int argc, char **argv) {
    tryvox_options *o;
    tryvox_client *c;
    tryvox_timer *t = NULL;
    pid_t pid;
    int status, rc;
    if (argc != 2) {
        fprintf(stderr, "usage: fork BASE_URL\n");
        return 2;
    }
    parent_pid = getpid();
    o = tryvox_options_new();
    CHECK(tryvox_options_set_base_url(o, argv[1]) == TRYVOX_OK, "base url");
    CHECK(tryvox_options_set_timeout_ms(o, 10000) == TRYVOX_OK, "timeout");
    c = tryvox_client_new_with_options("AC123456", "tvx_sk_test_s3cr3t-Key-Never-Shown", o);
    tryvox_options_free(o);
    if (!c) {
        printf("client: %s\n1 failures\n", tryvox_last_error());
        return 1;
    }
    /* Used before the fork: a keep-alive connection on each path, a hangup pending. */
    rc = tryvox_hangup(c, "ok-before-fork-sync");
    CHECK(rc == TRYVOX_OK, "before the fork, sync: %d", rc);
    async_want = TRYVOX_OK;
    CHECK(tryvox_hangup_async(c, "ok-before-fork-async", on_async, NULL) == TRYVOX_OK, "async");
    CHECK(wait_async(1), "before the fork, the async callback");
    CHECK(tryvox_hangup_after(c, "ok-scheduled-by-parent", 60000, on_timer, NULL, &t) ==
              TRYVOX_OK,
          "scheduled");

    fflush(stdout);
    pid = fork();
    if (pid < 0) {
        printf("fork failed\n1 failures\n");
        return 1;
    }
    if (pid == 0) {
        rounds(c, "nf-flat-", TRYVOX_NOT_FOUND);
        /* The parent's timer is not the child's to cancel, and never calls back here. */
        CHECK(tryvox_timer_cancel(t) == TRYVOX_BUSY, "cancel in the child");
        tryvox_client_free(c);
        CHECK(!timer_called_in_child, "the parent's scheduled hangup called back in the child");
        tryvox_timer_free(t);
        printf("child: %d failures\n", failures);
        fflush(stdout);
        _exit(failures == 0 ? 0 : 1);
    }
    rounds(c, "ok-", TRYVOX_OK);
    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        failures++;
        printf("FAIL the child ended with status 0x%x\n", status);
    }
    /* The parent's connections still work after the child is gone. */
    rc = tryvox_hangup(c, "ok-after-child");
    CHECK(rc == TRYVOX_OK, "after the child, sync: %d", rc);
    CHECK(tryvox_timer_cancel(t) == TRYVOX_OK, "the parent cancels its own timer");
    tryvox_timer_free(t);
    tryvox_client_free(c);
    printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
