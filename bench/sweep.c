/*
 * Times tryvox_hangup_all: ends every live call of the simulator's account.
 * usage: TRYVOX_API_KEY=... sweep BASE_URL ACCOUNT MAX_PARALLEL
 * Prints one JSON line: seconds, counts, and the client's latency percentiles.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tryvox.h"

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

int main(int argc, char **argv) {
    const char *key = getenv("TRYVOX_API_KEY");
    if (argc != 4 || !key) {
        fprintf(stderr, "usage: TRYVOX_API_KEY=... %s BASE_URL ACCOUNT MAX_PARALLEL\n", argv[0]);
        return 2;
    }
    tryvox_options *o = tryvox_options_new();
    tryvox_options_set_base_url(o, argv[1]);
    tryvox_client *c = tryvox_client_new_with_options(argv[2], key, o);
    tryvox_options_free(o);
    if (!c) {
        fprintf(stderr, "client: %s\n", tryvox_last_error());
        return 1;
    }
    tryvox_sweep sw;
    memset(&sw, 0, sizeof sw);
    sw.size = sizeof sw;
    sw.max_parallel = (uint32_t)atoi(argv[3]);
    double t0 = now();
    int rc = tryvox_hangup_all(c, &sw);
    double took = now() - t0;
    tryvox_stats st;
    memset(&st, 0, sizeof st);
    st.size = sizeof st;
    tryvox_client_stats(c, &st);
    printf("{\"status\":%d,\"seconds\":%.3f,\"ended\":%llu,\"already_gone\":%llu,\"failed\":%llu,"
           "\"still_live\":%llu,\"listings\":%llu,\"p50_us\":%llu,\"p99_us\":%llu}\n",
           rc, took, (unsigned long long)sw.ended, (unsigned long long)sw.already_gone,
           (unsigned long long)sw.failed, (unsigned long long)sw.still_live,
           (unsigned long long)sw.listings, (unsigned long long)st.latency_p50_us,
           (unsigned long long)st.latency_p99_us);
    tryvox_client_free(c);
    return rc == TRYVOX_OK ? 0 : 1;
}
