/*
 * A module host's life: dlopen libtryvox, use it, dlclose it, over and over, checking what
 * docs/embedding.md says about unloading (the mapping is read from /proc/self/maps):
 *
 *  1. A thread that called into the library and has exited does not keep it: dlclose
 *     unmaps it. The client's own threads are gone once tryvox_client_free returns, async
 *     hangups included.
 *  2. A thread that called into it and is still alive keeps it mapped after dlclose: Rust
 *     thread-local destructors registered on that thread must run when it exits. Once
 *     that thread has exited, the next dlopen/dlclose pair unmaps it.
 *  3. Five rounds in which the main thread itself calls in (and so keeps the library): it
 *     stays mapped after every dlclose, and every dlopen reuses that one mapping.
 *
 * usage: TRYVOX_API_KEY=... reload LIBPATH BASE_URL ACCOUNT LIVE_ID x5 (the key is not
 * passed on the command line, where tools such as valgrind would print it)
 * Prints one line per step and exits non-zero if a hangup or a check failed.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tryvox.h"

typedef tryvox_options *(*opt_new_fn)(void);
typedef int (*opt_url_fn)(tryvox_options *, const char *);
typedef void (*opt_free_fn)(tryvox_options *);
typedef tryvox_client *(*new_fn)(const char *, const char *, const tryvox_options *);
typedef int (*hangup_fn)(tryvox_client *, const char *);
typedef int (*hangup_async_fn)(tryvox_client *, const char *, tryvox_hangup_callback, void *);
typedef void (*free_fn)(tryvox_client *);
typedef const char *(*str_fn)(void);

struct api {
    void *handle;
    opt_new_fn opt_new;
    opt_url_fn opt_url;
    opt_free_fn opt_free;
    new_fn client_new;
    hangup_fn hangup;
    hangup_async_fn hangup_async;
    free_fn client_free;
    str_fn last_error;
};

static const char *lib_path, *base_url, *account, *key;
static int failures = 0; /* touched by the main thread only, or while it waits in join */

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        if (!(cond)) {                                                     \
            failures++;                                                    \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

/* How many lines of /proc/self/maps belong to libtryvox: 0 when it is not mapped. */
static int mapped(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int n = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "libtryvox")) n++;
    if (f) fclose(f);
    return n;
}

/* Whether the dynamic linker still has the library loaded, so that the next dlopen reuses
 * it rather than mapping it anew. RTLD_NOLOAD maps nothing and runs no code of it. */
static int still_loaded(void) {
    void *h = dlopen(lib_path, RTLD_NOW | RTLD_NOLOAD);
    if (h) dlclose(h);
    return h != NULL;
}

static int load(struct api *a) {
    a->handle = dlopen(lib_path, RTLD_NOW | RTLD_LOCAL);
    if (!a->handle) {
        fprintf(stderr, "dlopen: %s\n", dlerror());
        return 0;
    }
    /* POSIX's idiom for turning dlsym's void * into a function pointer. */
#define LOAD(field, name) *(void **)(&a->field) = dlsym(a->handle, name)
    LOAD(opt_new, "tryvox_options_new");
    LOAD(opt_url, "tryvox_options_set_base_url");
    LOAD(opt_free, "tryvox_options_free");
    LOAD(client_new, "tryvox_client_new_with_options");
    LOAD(hangup, "tryvox_hangup");
    LOAD(hangup_async, "tryvox_hangup_async");
    LOAD(client_free, "tryvox_client_free");
    LOAD(last_error, "tryvox_last_error");
#undef LOAD
    if (!a->opt_new || !a->opt_url || !a->opt_free || !a->client_new || !a->hangup ||
        !a->hangup_async || !a->client_free || !a->last_error) {
        fprintf(stderr, "dlsym failed\n");
        return 0;
    }
    return 1;
}

static void unload(struct api *a) {
    CHECK(dlclose(a->handle) == 0, "dlclose: %s", dlerror());
}

static tryvox_client *client(const struct api *a) {
    tryvox_options *o = a->opt_new();
    a->opt_url(o, base_url);
    tryvox_client *c = a->client_new(account, key, o);
    a->opt_free(o);
    return c;
}

/* Runs on the library's own thread; the library is loaded until client_free returns. */
static void on_done(void *user_data, const char *call_uuid, int status, int http_status,
                    const char *message) {
    (void)call_uuid;
    (void)http_status;
    (void)message;
    *(int *)user_data = status;
}

/* A whole client life on the calling thread: a blocking and an async hangup of an unknown
 * call. Returns the number of results that were not TRYVOX_NOT_FOUND. */
static int client_life(const struct api *a) {
    tryvox_client *c = client(a);
    if (!c) {
        fprintf(stderr, "client: %s\n", a->last_error());
        return 1;
    }
    int async_status = -1;
    int bad = a->hangup_async(c, "no-such-call", on_done, &async_status) != TRYVOX_OK;
    int rc = a->hangup(c, "no-such-call");
    if (rc != TRYVOX_NOT_FOUND) {
        fprintf(stderr, "hangup: %d: %s\n", rc, a->last_error());
        bad++;
    }
    a->client_free(c); /* waits for the async hangup and its callback */
    if (async_status != TRYVOX_NOT_FOUND) {
        fprintf(stderr, "async hangup: %d\n", async_status);
        bad++;
    }
    return bad;
}

struct worker {
    const struct api *api;
    int bad;
    int wait_for_release;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int used, released;
};

static void *worker_main(void *arg) {
    struct worker *w = (struct worker *)arg;
    w->bad = client_life(w->api);
    if (w->wait_for_release) {
        pthread_mutex_lock(&w->lock);
        w->used = 1;
        pthread_cond_broadcast(&w->cond);
        while (!w->released) pthread_cond_wait(&w->cond, &w->lock);
        pthread_mutex_unlock(&w->lock);
    }
    return NULL;
}

static void worker_start(struct worker *w, pthread_t *t, const struct api *a, int wait) {
    memset(w, 0, sizeof *w);
    w->api = a;
    w->wait_for_release = wait;
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->cond, NULL);
    if (pthread_create(t, NULL, worker_main, w) != 0) {
        fprintf(stderr, "pthread_create failed\n");
        exit(1);
    }
}

static void worker_wait_used(struct worker *w) {
    pthread_mutex_lock(&w->lock);
    while (!w->used) pthread_cond_wait(&w->cond, &w->lock);
    pthread_mutex_unlock(&w->lock);
}

static void worker_release_and_join(struct worker *w, pthread_t t) {
    pthread_mutex_lock(&w->lock);
    w->released = 1;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->lock);
    pthread_join(t, NULL);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->cond);
}

int main(int argc, char **argv) {
    key = getenv("TRYVOX_API_KEY");
    if (argc != 9 || !key) {
        fprintf(stderr, "usage: TRYVOX_API_KEY=... %s LIB BASE ACCOUNT ID1..ID5\n", argv[0]);
        return 2;
    }
    lib_path = argv[1];
    base_url = argv[2];
    account = argv[3];
    struct api a;
    struct worker w;
    pthread_t t;

    /* The program does not link libtryvox: only dlopen maps it. */
    CHECK(mapped() == 0, "libtryvox is mapped before the first dlopen");

    /* 1. Used on a thread that has exited: dlclose unmaps it. */
    if (!load(&a)) return 1;
    worker_start(&w, &t, &a, 0);
    pthread_join(t, NULL);
    CHECK(w.bad == 0, "step 1: %d hangup(s) failed", w.bad);
    unload(&a);
    int n = mapped();
    printf("step 1: used on a thread that has exited; mapped after dlclose: %s\n",
           n ? "yes" : "no");
    CHECK(n == 0, "step 1: still mapped (%d lines) after dlclose, no thread that used it alive", n);

    /* 2. Used on a thread that is alive at dlclose: it stays mapped; once that thread has
     *    exited, the next dlopen/dlclose pair unmaps it. */
    if (!load(&a)) return 1;
    worker_start(&w, &t, &a, 1);
    worker_wait_used(&w);
    CHECK(w.bad == 0, "step 2: %d hangup(s) failed", w.bad);
    unload(&a);
    n = mapped();
    printf("step 2: used on a thread that is alive; mapped after dlclose: %s\n", n ? "yes" : "no");
    CHECK(n > 0, "step 2: unmapped by dlclose while a thread that used it is alive");
    worker_release_and_join(&w, t);
    printf("step 2: that thread has exited; mapped: %s\n", mapped() ? "yes" : "no");
    if (!load(&a)) return 1;
    unload(&a);
    n = mapped();
    printf("step 2: after the next dlopen/dlclose; mapped: %s\n", n ? "yes" : "no");
    CHECK(n == 0, "step 2: still mapped (%d lines) after the thread exited and a dlclose", n);

    /* 3. The main thread calls in: mapped after every dlclose, one mapping reused. */
    int first_lines = 0;
    for (int round = 0; round < 5; round++) {
        if (!load(&a)) return 1;
        if (round == 0)
            first_lines = mapped();
        else
            CHECK(mapped() == first_lines, "round %d: %d map lines, %d in round 0", round,
                  mapped(), first_lines);
        tryvox_client *c = client(&a);
        int rc = c ? a.hangup(c, argv[4 + round]) : -1;
        int rc2 = c ? a.hangup(c, "no-such-call") : -1;
        int ok = rc == TRYVOX_OK && rc2 == TRYVOX_NOT_FOUND;
        if (!ok) {
            fprintf(stderr, "round %d: %d %d: %s\n", round, rc, rc2, a.last_error());
            failures++;
        }
        a.client_free(c);
        unload(&a);
        n = mapped();
        printf("round %d: hangup %s, still mapped after dlclose: %s\n", round,
               ok ? "ok" : "FAILED", n ? "yes" : "no");
        CHECK(n > 0, "round %d: unmapped by dlclose although the main thread used it", round);
        CHECK(still_loaded(), "round %d: the next dlopen would not reuse the mapping", round);
    }
    printf("reload: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
