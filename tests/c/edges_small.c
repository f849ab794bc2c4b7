/* Issue 18 cases 12 and 13 as a C program sees them, written from include/tryvox.h only:
 * tryvox_client_stats writes whole fields only (the layout as this compiler lays out the
 * header's struct), and a CA file that is a FIFO, a device, a directory or over 1 MiB is
 * refused at once. Usage: edges_small BASE_URL SCRATCH_DIR. Prints "N failures". */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tryvox.h"

static int failures = 0;

#define CHECK(cond, ...)                                                                   \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            failures++;                                                                    \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                                    \
            printf(__VA_ARGS__);                                                           \
            printf("\n");                                                                  \
        }                                                                                  \
    } while (0)

#define SENTINEL 0xA5

/* The end of the last field of tryvox_stats that fits whole in `size` bytes. */
static size_t whole_fields(size_t size) {
    size_t ends[16];
    size_t n = 0, i, best = 0;
    ends[n++] = offsetof(tryvox_stats, size) + sizeof(size_t);
    ends[n++] = offsetof(tryvox_stats, hangups_by_status) + sizeof(((tryvox_stats *)0)->hangups_by_status);
    ends[n++] = offsetof(tryvox_stats, attempts) + 8;
    ends[n++] = offsetof(tryvox_stats, retries_connection) + 8;
    ends[n++] = offsetof(tryvox_stats, retries_rate_limited) + 8;
    ends[n++] = offsetof(tryvox_stats, retries_server_error) + 8;
    ends[n++] = offsetof(tryvox_stats, in_flight) + 8;
    ends[n++] = offsetof(tryvox_stats, connections_open) + 8;
    ends[n++] = offsetof(tryvox_stats, connections_opened) + 8;
    ends[n++] = offsetof(tryvox_stats, latency_p50_us) + 8;
    ends[n++] = offsetof(tryvox_stats, latency_p90_us) + 8;
    ends[n++] = offsetof(tryvox_stats, latency_p99_us) + 8;
    ends[n++] = offsetof(tryvox_stats, latency_max_us) + 8;
    for (i = 0; i < n; i++)
        if (ends[i] <= size && ends[i] > best)
            best = ends[i];
    return best;
}

static void stats_whole_fields(const char *base) {
    tryvox_options *o = tryvox_options_new();
    tryvox_client *c;
    unsigned char buf[sizeof(tryvox_stats) + 16];
    size_t size, whole, i;
    tryvox_options_set_base_url(o, base);
    c = tryvox_client_new_with_options("AC123456", "tvx_sk_test_s3cr3t-Key-Never-Shown", o);
    tryvox_options_free(o);
    CHECK(c != NULL, "client: %s", tryvox_last_error());
    if (c == NULL)
        return;
    CHECK(tryvox_hangup(c, "ok-c-edges") == TRYVOX_OK, "hangup: %s", tryvox_last_error());
    for (size = sizeof(size_t); size <= sizeof(tryvox_stats); size++) {
        memset(buf, SENTINEL, sizeof buf);
        memcpy(buf, &size, sizeof size);
        CHECK(tryvox_client_stats(c, (tryvox_stats *)(void *)buf) == TRYVOX_OK, "stats(%zu)",
              size);
        whole = whole_fields(size);
        for (i = whole; i < sizeof buf; i++) {
            if (buf[i] != SENTINEL) {
                CHECK(0, "size %zu: byte %zu written (fields end at %zu)", size, i, whole);
                break;
            }
        }
        if (whole >= offsetof(tryvox_stats, hangups_by_status) +
                         sizeof(((tryvox_stats *)0)->hangups_by_status)) {
            uint64_t ok;
            memcpy(&ok, buf + offsetof(tryvox_stats, hangups_by_status), sizeof ok);
            CHECK(ok == 1, "size %zu: hangups_by_status[OK] = %llu", size,
                  (unsigned long long)ok);
        }
    }
    tryvox_client_free(c);
}

/* A client with CA file `path` is refused, and the last error names the path. alarm()
 * turns a hang into a failure of the whole program. */
static void ca_refused(const char *path, const char *why) {
    tryvox_options *o = tryvox_options_new();
    tryvox_client *c;
    const char *err;
    CHECK(tryvox_options_set_ca_file(o, path) == TRYVOX_OK, "set_ca_file %s", path);
    alarm(10);
    c = tryvox_client_new_with_options("AC123456", "tvx_sk_test_s3cr3t-Key-Never-Shown", o);
    alarm(0);
    tryvox_options_free(o);
    err = tryvox_last_error();
    CHECK(c == NULL, "%s: a client was built", path);
    CHECK(strstr(err, path) != NULL && strstr(err, why) != NULL, "%s: %s", path, err);
    if (c != NULL)
        tryvox_client_free(c);
}

static void ca_files(const char *dir) {
    char fifo[4096], big[4096];
    FILE *f;
    long i;
    snprintf(fifo, sizeof fifo, "%s/c.fifo", dir);
    snprintf(big, sizeof big, "%s/c-big.pem", dir);
    unlink(fifo);
    CHECK(mkfifo(fifo, 0600) == 0, "mkfifo: %s", strerror(errno));
    ca_refused(fifo, "not a regular file");
    ca_refused("/dev/zero", "not a regular file");
    ca_refused(dir, "not a regular file");
    f = fopen(big, "w");
    CHECK(f != NULL, "fopen %s", big);
    if (f == NULL)
        return;
    fputs("-----BEGIN CERTIFICATE-----\n", f);
    for (i = 28; i <= (1L << 20); i++)
        fputc(i % 65 == 0 ? '\n' : 'A', f);
    fclose(f);
    ca_refused(big, "1048576");
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: %s BASE_URL SCRATCH_DIR\n", argv[0]);
        return 2;
    }
    stats_whole_fields(argv[1]);
    ca_files(argv[2]);
    printf("%d failures\n", failures);
    return failures == 0 ? 0 : 1;
}
