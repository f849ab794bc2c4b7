/*
 * The measurements of libtryvox's async/bulk engine that bench/run.sh takes (client.c
 * keeps the sequential, libcurl and memory modes):
 *   engine bulk    BASE N PREFIX PAR   warm: client, a 2,000-id warm-up at PAR in flight
 *                                      (threads started, connections open), then the timed
 *                                      tryvox_hangup_many of N ids
 *   engine once    BASE N PREFIX PAR   client creation + one tryvox_hangup_many, nothing
 *                                      before it (what `cold` runs as a fresh process)
 *   engine cold    BASE N PREFIX PAR   runs `engine once ...` as a fresh process and times
 *                                      it from outside: fork to exit reaped (process start,
 *                                      library load, client creation, connects and TLS
 *                                      handshakes included); CPU is the child's rusage
 *   engine async   BASE N PREFIX       the caller's cost of tryvox_hangup_async: each of N
 *                                      calls timed alone (clock_gettime around the call),
 *                                      after a 2,000-call warm-up; then waits for every
 *                                      callback
 *   engine threads BASE N PREFIX PAR   the process's threads (/proc/self/task, and by name:
 *                                      the library's are tryvox-*): before the client, right
 *                                      after creating it, the most seen during a
 *                                      tryvox_hangup_many of N ids, and AFTER seconds later
 * Requests go to BASE/v1/voice/accounts/AC123456/calls/{PREFIX}{i}. Prints one JSON line.
 * Environment: BENCH_CA_FILE (tryvox_options_set_ca_file), BENCH_TIMEOUT_MS (default
 * 30000), BENCH_MAX_RETRIES (default: the library's), AFTER (threads mode, default 10).
 */
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tryvox.h"

#define ACCOUNT "AC123456"
#define KEY "tvx_sk_test_simulator"
#define NSTATUS 32
#define WARM 2000
#define SAMPLER_NAME "bench-sampler"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double tv(struct timeval t) { return (double)t.tv_sec + (double)t.tv_usec / 1e6; }

static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return tv(r.ru_utime) + tv(r.ru_stime);
}

static void sleep_s(double s) {
    struct timespec t = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&t, &t) != 0) {
    }
}

static tryvox_client *new_client(const char *base) {
    tryvox_options *o = tryvox_options_new();
    const char *ca = getenv("BENCH_CA_FILE"), *timeout = getenv("BENCH_TIMEOUT_MS"),
               *retries = getenv("BENCH_MAX_RETRIES");
    int ok = tryvox_options_set_base_url(o, base) == TRYVOX_OK &&
             tryvox_options_set_timeout_ms(o, timeout ? (uint32_t)atol(timeout) : 30000) == TRYVOX_OK &&
             (!ca || !*ca || tryvox_options_set_ca_file(o, ca) == TRYVOX_OK) &&
             (!retries || tryvox_options_set_max_retries(o, (uint32_t)atol(retries)) == TRYVOX_OK);
    tryvox_client *c = ok ? tryvox_client_new_with_options(ACCOUNT, KEY, o) : NULL;
    tryvox_options_free(o);
    if (!c) {
        fprintf(stderr, "engine: %s\n", tryvox_last_error());
        exit(1);
    }
    return c;
}

static char **make_ids(const char *prefix, long n) {
    char **ids = malloc(sizeof(char *) * (size_t)n);
    for (long i = 0; i < n; i++) {
        ids[i] = malloc(strlen(prefix) + 24);
        sprintf(ids[i], "%s%ld", prefix, i);
    }
    return ids;
}

static void free_ids(char **ids, long n) {
    for (long i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

/* {"0":19998,"8":2}: the count of each final status. */
static void statuses_json(char *buf, size_t len, const long *count) {
    size_t used = (size_t)snprintf(buf, len, "{");
    int first = 1;
    for (int s = 0; s < NSTATUS && used < len; s++) {
        if (!count[s]) continue;
        used += (size_t)snprintf(buf + used, len - used, "%s\"%d\":%ld", first ? "" : ",", s, count[s]);
        first = 0;
    }
    if (used < len) snprintf(buf + used, len - used, "}");
}

static long tally(const int *out, long n, long *count) {
    long failed = 0;
    for (long i = 0; i < n; i++) {
        failed += out[i] != TRYVOX_OK;
        if (out[i] >= 0 && out[i] < NSTATUS) count[out[i]]++;
    }
    return failed;
}

/* ---- threads of this process ---- */

struct census {
    int total, lib, names;
    char name[16][17];
    int count[16];
};

static void take_census(struct census *c) {
    memset(c, 0, sizeof *c);
    DIR *d = opendir("/proc/self/task");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f) continue; /* exited meanwhile */
        if (!fgets(comm, sizeof comm, f)) comm[0] = 0;
        fclose(f);
        comm[strcspn(comm, "\n")] = 0;
        if (strcmp(comm, SAMPLER_NAME) == 0) continue;
        c->total++;
        if (strncmp(comm, "tryvox-", 7) != 0) continue;
        c->lib++;
        int i = 0;
        while (i < c->names && strcmp(c->name[i], comm) != 0) i++;
        if (i == c->names) {
            if (c->names == 16) continue;
            snprintf(c->name[i], sizeof c->name[i], "%s", comm);
            c->names++;
        }
        c->count[i]++;
    }
    closedir(d);
}

static void census_json(char *buf, size_t len, const struct census *c) {
    size_t used = (size_t)snprintf(buf, len, "{\"total\":%d,\"tryvox\":%d,\"by_name\":{", c->total, c->lib);
    for (int i = 0; i < c->names && used < len; i++)
        used += (size_t)snprintf(buf + used, len - used, "%s\"%s\":%d", i ? "," : "", c->name[i], c->count[i]);
    if (used < len) snprintf(buf + used, len - used, "}}");
}

/* Samples the thread census every millisecond until stopped; keeps the largest. */
struct sampler {
    pthread_t t;
    int stop;
    long samples;
    struct census max;
};

static void *sample(void *arg) {
    struct sampler *s = arg;
    pthread_setname_np(pthread_self(), SAMPLER_NAME);
    while (!__atomic_load_n(&s->stop, __ATOMIC_ACQUIRE)) {
        struct census c;
        take_census(&c);
        if (c.total > s->max.total) s->max = c;
        s->samples++;
        sleep_s(0.001);
    }
    return NULL;
}

static void sampler_start(struct sampler *s) {
    memset(s, 0, sizeof *s);
    if (pthread_create(&s->t, NULL, sample, s) != 0) {
        fprintf(stderr, "engine: cannot start the sampler thread\n");
        exit(1);
    }
}

static void sampler_stop(struct sampler *s) {
    __atomic_store_n(&s->stop, 1, __ATOMIC_RELEASE);
    pthread_join(s->t, NULL);
}

/* ---- async completions ---- */

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long completed;
static long async_status[NSTATUS];
static double last_done;

static void on_done(void *user_data, const char *call_uuid, int status, int http_status, const char *message) {
    (void)user_data;
    (void)call_uuid;
    (void)http_status;
    (void)message;
    double t = now();
    pthread_mutex_lock(&mu);
    completed++;
    if (status >= 0 && status < NSTATUS) async_status[status]++;
    last_done = t;
    pthread_cond_signal(&cv);
    pthread_mutex_unlock(&mu);
}

static void wait_completed(long n) {
    pthread_mutex_lock(&mu);
    while (completed < n) pthread_cond_wait(&cv, &mu);
    pthread_mutex_unlock(&mu);
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- modes ---- */

static void stats_json(char *buf, size_t len, const tryvox_stats *a, const tryvox_stats *b) {
    snprintf(buf, len,
             "\"attempts\":%llu,\"retries_connection\":%llu,\"retries_rate_limited\":%llu,"
             "\"retries_server_error\":%llu,\"connections_opened\":%llu",
             (unsigned long long)(b->attempts - a->attempts),
             (unsigned long long)(b->retries_connection - a->retries_connection),
             (unsigned long long)(b->retries_rate_limited - a->retries_rate_limited),
             (unsigned long long)(b->retries_server_error - a->retries_server_error),
             (unsigned long long)(b->connections_opened - a->connections_opened));
}

static int mode_bulk(const char *base, long n, const char *prefix, uint32_t par, int warm) {
    double start = now();
    tryvox_client *c = new_client(base);
    double created = now();
    char **ids = make_ids(prefix, n);
    int *out = malloc(sizeof(int) * (size_t)(n > WARM ? n : WARM));
    if (warm) {
        /* Against the simulator these ids are not live calls (404): only the timed count. */
        char **w = make_ids("warm-bulk-", WARM);
        tryvox_hangup_many(c, (const char *const *)w, WARM, out, par);
        free_ids(w, WARM);
    }
    tryvox_stats s0 = {.size = sizeof(tryvox_stats)}, s1 = {.size = sizeof(tryvox_stats)};
    tryvox_client_stats(c, &s0);
    double t0 = now(), c0 = cpu_seconds();
    int rc = tryvox_hangup_many(c, (const char *const *)ids, (size_t)n, out, par);
    double wall = now() - t0, cpu = cpu_seconds() - c0;
    tryvox_client_stats(c, &s1);
    long count[NSTATUS] = {0};
    long failed = rc == TRYVOX_OK ? tally(out, n, count) : n;
    char st[512], sj[512];
    statuses_json(st, sizeof st, count);
    stats_json(sj, sizeof sj, &s0, &s1);
    printf("{\"what\":\"bulk %s\",\"n\":%ld,\"par\":%u,\"failed\":%ld,\"seconds\":%.4f,\"per_sec\":%.0f,"
           "\"cpu_us\":%.2f,\"create_ms\":%.3f,\"since_start_ms\":%.3f,\"statuses\":%s,%s}\n",
           warm ? "warm" : "once", n, par, failed, wall, (double)n / wall, cpu * 1e6 / (double)n,
           (created - start) * 1e3, (now() - start) * 1e3, st, sj);
    fflush(stdout);
    tryvox_client_free(c);
    free(out);
    free_ids(ids, n);
    return 0;
}

static int mode_cold(char **argv) {
    int fds[2];
    if (pipe(fds) != 0) return perror("pipe"), 1;
    char *args[] = {argv[0], "once", argv[2], argv[3], argv[4], argv[5], NULL};
    double t0 = now();
    pid_t pid = fork();
    if (pid < 0) return perror("fork"), 1;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* killed with its parent (bench/run.sh's timeout) */
        dup2(fds[1], 1);
        close(fds[0]);
        close(fds[1]);
        execv("/proc/self/exe", args);
        _exit(127);
    }
    close(fds[1]);
    char inner[4096];
    size_t got = 0;
    ssize_t r;
    while ((r = read(fds[0], inner + got, sizeof inner - 1 - got)) > 0) got += (size_t)r;
    close(fds[0]);
    int st = 0;
    struct rusage ru;
    if (wait4(pid, &st, 0, &ru) != pid) return perror("wait4"), 1;
    double wall = now() - t0;
    inner[got] = 0;
    inner[strcspn(inner, "\n")] = 0;
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || inner[0] != '{') {
        fprintf(stderr, "engine cold: the child failed (status %d): %s\n", st, inner);
        return 1;
    }
    long n = atol(argv[3]);
    const char *f = strstr(inner, "\"failed\":");
    long failed = f ? atol(f + 9) : n;
    printf("{\"what\":\"bulk cold\",\"n\":%ld,\"failed\":%ld,\"seconds\":%.4f,\"per_sec\":%.0f,\"cpu_us\":%.2f,"
           "\"max_rss_kb\":%ld,\"inner\":%s}\n",
           n, failed, wall, (double)n / wall, (tv(ru.ru_utime) + tv(ru.ru_stime)) * 1e6 / (double)n, ru.ru_maxrss,
           inner);
    return 0;
}

static int mode_async(const char *base, long n, const char *prefix) {
    tryvox_client *c = new_client(base);
    long refused = 0, accepted = 0;
    char **w = make_ids("warm-async-", WARM);
    for (long i = 0; i < WARM; i++) accepted += tryvox_hangup_async(c, w[i], on_done, NULL) == TRYVOX_OK;
    wait_completed(accepted);
    free_ids(w, WARM);
    pthread_mutex_lock(&mu);
    completed = 0;
    memset(async_status, 0, sizeof async_status);
    pthread_mutex_unlock(&mu);
    accepted = 0;

    char **ids = make_ids(prefix, n);
    double *lat = malloc(sizeof(double) * (size_t)n);
    struct sampler s;
    sampler_start(&s);
    double t0 = now(), c0 = cpu_seconds();
    for (long i = 0; i < n; i++) {
        double a = now();
        int rc = tryvox_hangup_async(c, ids[i], on_done, NULL);
        lat[i] = now() - a;
        if (rc == TRYVOX_OK) accepted++;
        else refused++;
    }
    double submitted = now() - t0;
    wait_completed(accepted);
    sampler_stop(&s);
    double cpu = cpu_seconds() - c0;
    pthread_mutex_lock(&mu);
    double all_done = last_done - t0;
    long count[NSTATUS];
    memcpy(count, async_status, sizeof count);
    pthread_mutex_unlock(&mu);
    qsort(lat, (size_t)n, sizeof(double), cmp_double);
    long failed = refused;
    for (int i = 1; i < NSTATUS; i++) failed += count[i];
    char st[512], th[1024];
    statuses_json(st, sizeof st, count);
    census_json(th, sizeof th, &s.max);
    printf("{\"what\":\"async\",\"n\":%ld,\"refused\":%ld,\"failed\":%ld,\"call_us_p50\":%.3f,\"call_us_p90\":%.3f,"
           "\"call_us_p99\":%.3f,\"call_us_p999\":%.3f,\"call_us_max\":%.3f,\"submit_seconds\":%.4f,"
           "\"seconds\":%.4f,\"per_sec\":%.0f,\"cpu_us\":%.2f,\"statuses\":%s,\"threads_max\":%s}\n",
           n, refused, failed, lat[n / 2] * 1e6, lat[n * 9 / 10] * 1e6, lat[n * 99 / 100] * 1e6,
           lat[n * 999 / 1000] * 1e6, lat[n - 1] * 1e6, submitted, all_done, (double)n / all_done,
           cpu * 1e6 / (double)n, st, th);
    fflush(stdout);
    tryvox_client_free(c);
    free(lat);
    free_ids(ids, n);
    return 0;
}

static int mode_threads(const char *base, long n, const char *prefix, uint32_t par) {
    const char *a = getenv("AFTER");
    double after = a ? atof(a) : 10;
    struct census before, idle, later;
    take_census(&before);
    tryvox_client *c = new_client(base);
    take_census(&idle);
    char **ids = make_ids(prefix, n);
    int *out = malloc(sizeof(int) * (size_t)n);
    struct sampler s;
    sampler_start(&s);
    tryvox_hangup_many(c, (const char *const *)ids, (size_t)n, out, par);
    sampler_stop(&s);
    long count[NSTATUS] = {0};
    long failed = tally(out, n, count);
    sleep_s(after);
    take_census(&later);
    char b[1024], i[1024], busy[1024], l[1024];
    census_json(b, sizeof b, &before);
    census_json(i, sizeof i, &idle);
    census_json(busy, sizeof busy, &s.max);
    census_json(l, sizeof l, &later);
    printf("{\"what\":\"threads\",\"n\":%ld,\"par\":%u,\"failed\":%ld,\"after_s\":%.1f,\"samples\":%ld,"
           "\"before_client\":%s,\"idle\":%s,\"busy\":%s,\"after\":%s}\n",
           n, par, failed, after, s.samples, b, i, busy, l);
    fflush(stdout);
    tryvox_client_free(c);
    free(out);
    free_ids(ids, n);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 5) {
        fprintf(stderr, "usage: %s bulk|once|cold|async|threads BASE N PREFIX [PAR]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *base = argv[2], *prefix = argv[4];
    long n = atol(argv[3]);
    uint32_t par = argc > 5 ? (uint32_t)atol(argv[5]) : 32;
    if (n <= 0) return fprintf(stderr, "engine: N must be positive\n"), 2;
    if (strcmp(mode, "bulk") == 0) return mode_bulk(base, n, prefix, par, 1);
    if (strcmp(mode, "once") == 0) return mode_bulk(base, n, prefix, par, 0);
    if (strcmp(mode, "cold") == 0) return argc > 5 ? mode_cold(argv) : 2;
    if (strcmp(mode, "async") == 0) return mode_async(base, n, prefix);
    if (strcmp(mode, "threads") == 0) return mode_threads(base, n, prefix, par);
    fprintf(stderr, "engine: unknown mode %s\n", mode);
    return 2;
}
