/*
 * Threads sharing one client, for race detectors (helgrind / ThreadSanitizer).
 * usage: threads BASE_URL  (against the id-driven test server)
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "tryvox.h"

static tryvox_client *client;
static int failures;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

static void fail(const char *what) {
    pthread_mutex_lock(&lock);
    failures++;
    fprintf(stderr, "FAIL %s\n", what);
    pthread_mutex_unlock(&lock);
}

static void *worker(void *arg) {
    long t = (long)arg;
    char id[64];
    for (int i = 0; i < 10; i++) {
        int nf = (i + t) % 2;
        snprintf(id, sizeof id, "%s-t%ld-%d", nf ? "nf-flat" : "ok", t, i);
        int rc = tryvox_hangup(client, id);
        if (rc != (nf ? TRYVOX_NOT_FOUND : TRYVOX_OK)) fail("status");
        if (strcmp(tryvox_last_error_code(), nf ? "call_not_found" : "") != 0) fail("per-thread code");
    }
    return NULL;
}

static int async_done;
static void on_done(void *ud, const char *id, int status, int http, const char *msg) {
    (void)ud;
    (void)id;
    (void)http;
    (void)msg;
    pthread_mutex_lock(&lock);
    if (status == TRYVOX_OK) async_done++;
    pthread_mutex_unlock(&lock);
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    tryvox_options *o = tryvox_options_new();
    tryvox_options_set_base_url(o, argv[1]);
    client = tryvox_client_new_with_options("AC123456", "tvx_sk_test_threads", o);
    tryvox_options_free(o);
    if (!client) return 1;
    pthread_t th[8];
    for (long t = 0; t < 8; t++) pthread_create(&th[t], NULL, worker, (void *)t);
    char id[64];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "ok-async-%d", i);
        if (tryvox_hangup_async(client, id, on_done, NULL) != TRYVOX_OK) fail("async");
    }
    for (int t = 0; t < 8; t++) pthread_join(th[t], NULL);
    tryvox_client_free(client);
    if (async_done != 20) fail("async count");
    printf("threads: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
