/*
 * One benchmark client, two HTTP stacks, the same requests:
 *   client tryvox seq  BASE N PREFIX        sequential tryvox_hangup on one client
 *   client curl   seq  BASE N PREFIX        sequential DELETEs on one reused libcurl easy handle
 *   client tryvox bulk BASE N PREFIX PAR    tryvox_hangup_many with PAR in flight
 *   client tryvox mem  BASE N PREFIX        N hangups in bulk chunks; RSS before and after
 * Requests go to BASE/v1/voice/accounts/AC123456/calls/{PREFIX}{i}. Prints one JSON line.
 * BENCH_CA_FILE in the environment: trust that PEM CA (https BASE), in both stacks.
 * Built with -DBENCH_NO_CURL it has the tryvox modes only (bench/wipe.sh needs no libcurl).
 */
#ifndef BENCH_NO_CURL
#include <curl/curl.h>
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "tryvox.h"

#define ACCOUNT "AC123456"
#define KEY "tvx_sk_test_simulator"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static double cpu_seconds(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return (double)r.ru_utime.tv_sec + (double)r.ru_utime.tv_usec / 1e6 + (double)r.ru_stime.tv_sec +
           (double)r.ru_stime.tv_usec / 1e6;
}

static long max_rss_kb(void) {
    struct rusage r;
    getrusage(RUSAGE_SELF, &r);
    return r.ru_maxrss;
}

static long rss_kb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &resident) != 2) resident = 0;
        fclose(f);
    }
    return resident * 4;
}

#ifndef BENCH_NO_CURL
static size_t discard(char *p, size_t s, size_t n, void *u) {
    (void)p;
    (void)u;
    return s * n;
}
#endif

static tryvox_client *new_client(const char *base) {
    tryvox_options *o = tryvox_options_new();
    tryvox_options_set_base_url(o, base);
    tryvox_options_set_timeout_ms(o, 30000);
    const char *ca = getenv("BENCH_CA_FILE");
    if (ca && *ca && tryvox_options_set_ca_file(o, ca) != TRYVOX_OK) {
        fprintf(stderr, "client: %s\n", tryvox_last_error());
        exit(1);
    }
    tryvox_client *c = tryvox_client_new_with_options(ACCOUNT, KEY, o);
    tryvox_options_free(o);
    if (!c) {
        fprintf(stderr, "client: %s\n", tryvox_last_error());
        exit(1);
    }
    return c;
}

static long rss_mid = 0;

static void report(const char *what, long n, long failed, double wall, double cpu, long rss_before) {
    printf("{\"what\":\"%s\",\"n\":%ld,\"failed\":%ld,\"seconds\":%.3f,\"per_sec\":%.0f,"
           "\"cpu_us\":%.2f,\"max_rss_kb\":%ld,\"rss_before_kb\":%ld,\"rss_mid_kb\":%ld,\"rss_after_kb\":%ld}\n",
           what, n, failed, wall, (double)n / wall, cpu * 1e6 / (double)n, max_rss_kb(), rss_before,
           rss_mid, rss_kb());
}

static char **make_ids(const char *prefix, long from, long n) {
    char **ids = malloc(sizeof(char *) * (size_t)n);
    for (long i = 0; i < n; i++) {
        ids[i] = malloc(strlen(prefix) + 24);
        sprintf(ids[i], "%s%ld", prefix, from + i);
    }
    return ids;
}

static void free_ids(char **ids, long n) {
    for (long i = 0; i < n; i++) free(ids[i]);
    free(ids);
}

int main(int argc, char **argv) {
    if (argc < 6) {
        fprintf(stderr, "usage: %s tryvox|curl seq|bulk|mem BASE N PREFIX [PAR]\n", argv[0]);
        return 2;
    }
    const char *lib = argv[1], *mode = argv[2], *base = argv[3], *prefix = argv[5];
    long n = atol(argv[4]);
    long failed = 0;
    char id[256];

#ifdef BENCH_NO_CURL
    if (strcmp(lib, "curl") == 0) {
        fprintf(stderr, "built without libcurl\n");
        return 2;
    }
#else
    if (strcmp(lib, "curl") == 0) {
        curl_global_init(CURL_GLOBAL_DEFAULT);
        CURL *h = curl_easy_init();
        struct curl_slist *hdr = curl_slist_append(NULL, "Authorization: Bearer " KEY);
        curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
        curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, "DELETE");
        curl_easy_setopt(h, CURLOPT_USERAGENT, "bench-curl");
        curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 10000L);
        curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
        const char *ca = getenv("BENCH_CA_FILE");
        if (ca && *ca) curl_easy_setopt(h, CURLOPT_CAINFO, ca);
        double t0 = now(), c0 = cpu_seconds();
        for (long i = 0; i < n; i++) {
            char url[512];
            snprintf(url, sizeof url, "%s/v1/voice/accounts/" ACCOUNT "/calls/%s%ld", base, prefix, i);
            curl_easy_setopt(h, CURLOPT_URL, url);
            long code = 0;
            if (curl_easy_perform(h) != CURLE_OK) failed++;
            else if (curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code), code != 204) failed++;
        }
        report("curl seq", n, failed, now() - t0, cpu_seconds() - c0, 0);
        curl_slist_free_all(hdr);
        curl_easy_cleanup(h);
        curl_global_cleanup();
        return 0;
    }
#endif

    tryvox_client *c = new_client(base);
    if (strcmp(mode, "seq") == 0) {
        double t0 = now(), c0 = cpu_seconds();
        for (long i = 0; i < n; i++) {
            snprintf(id, sizeof id, "%s%ld", prefix, i);
            if (tryvox_hangup(c, id) != TRYVOX_OK) failed++;
        }
        report("tryvox seq", n, failed, now() - t0, cpu_seconds() - c0, 0);
    } else if (strcmp(mode, "bulk") == 0) {
        uint32_t par = argc > 6 ? (uint32_t)atoi(argv[6]) : 32;
        char **ids = make_ids(prefix, 0, n);
        int *out = malloc(sizeof(int) * (size_t)n);
        /* Warm-up: start the workers and open the connections, as wrk opens its own
         * before its steady state. Against the simulator these ids are not live calls. */
        char **warm = make_ids("warm-bulk-", 0, 2000);
        tryvox_hangup_many(c, (const char *const *)warm, 2000, out, par);
        free_ids(warm, 2000);
        double t0 = now(), c0 = cpu_seconds();
        tryvox_hangup_many(c, (const char *const *)ids, (size_t)n, out, par);
        double wall = now() - t0, cpu = cpu_seconds() - c0;
        for (long i = 0; i < n; i++) failed += out[i] != TRYVOX_OK;
        report("tryvox bulk", n, failed, wall, cpu, 0);
        free(out);
        free_ids(ids, n);
    } else {
        /* Memory: warm up to steady state (threads, pooled connections, allocator arenas:
         * 100,000 hangups), then N more in chunks; RSS growth over those shows a leak. */
        const long chunk = 20000;
        int *out = malloc(sizeof(int) * (size_t)chunk);
        char **ids = make_ids(prefix, 0, chunk);
        for (int w = 0; w < 5; w++) tryvox_hangup_many(c, (const char *const *)ids, (size_t)chunk, out, 32);
        long before = rss_kb();
        double t0 = now(), c0 = cpu_seconds();
        for (long done = 0; done < n; done += chunk) {
            if (done == n / 2) rss_mid = rss_kb();
            tryvox_hangup_many(c, (const char *const *)ids, (size_t)chunk, out, 32);
            for (long i = 0; i < chunk; i++) failed += out[i] != TRYVOX_OK;
        }
        report("tryvox mem", n, failed, now() - t0, cpu_seconds() - c0, before);
        free_ids(ids, chunk);
        free(out);
    }
    tryvox_client_free(c);
    return 0;
}
