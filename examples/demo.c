/*
 * The libtryvox demo, run against the local simulator (tryvox-sim) by `make demo`.
 *
 * usage: demo BASE_URL ACCOUNT_ID API_KEY
 *
 * libtryvox only hangs calls up. To have a call to hang up, and to show what the
 * simulator did, this demo creates and reads calls with a tiny plain-HTTP helper
 * (loopback only, demo code: not part of the library). After the single hangups it
 * seeds a few dozen calls and ends them all with one tryvox_hangup_all (the emergency
 * sweep), then prints the client's statistics (tryvox_client_stats).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "tryvox.h"

/* ---- a minimal HTTP/1.0 client for the simulator's create/get/inbox endpoints ---- */

static char host[256];
static char port[16];

static int http(const char *method, const char *path, const char *key, const char *body,
                char *out, size_t out_len) {
    struct addrinfo hints, *ai;
    memset(&hints, 0, sizeof hints);
    hints.ai_socktype = SOCK_STREAM;
    if (getaddrinfo(host, port, &hints, &ai) != 0) return -1;
    int fd = socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
        freeaddrinfo(ai);
        if (fd >= 0) close(fd);
        return -1;
    }
    freeaddrinfo(ai);
    char req[2048];
    int n = snprintf(req, sizeof req,
                     "%s %s HTTP/1.0\r\nHost: %s:%s\r\nAuthorization: Bearer %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     method, path, host, port, key, body ? strlen(body) : 0, body ? body : "");
    if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
        close(fd);
        return -1;
    }
    size_t got = 0;
    ssize_t r;
    while (got + 1 < out_len && (r = recv(fd, out + got, out_len - 1 - got, 0)) > 0) got += (size_t)r;
    out[got] = '\0';
    close(fd);
    int status = 0;
    if (sscanf(out, "HTTP/%*s %d", &status) != 1) return -1;
    char *b = strstr(out, "\r\n\r\n");
    if (b) memmove(out, b + 4, strlen(b + 4) + 1);
    return status;
}

/* Copies the string value of "field" from a flat JSON text into dst. */
static int json_str(const char *json, const char *field, char *dst, size_t len) {
    char pat[64];
    snprintf(pat, sizeof pat, "\"%s\":\"", field);
    const char *p = strstr(json, pat);
    if (!p) return 0;
    p += strlen(pat);
    size_t i = 0;
    while (p[i] && p[i] != '"' && i + 1 < len) {
        dst[i] = p[i];
        i++;
    }
    dst[i] = '\0';
    return 1;
}

/* ---- the demo ---- */

static int failures = 0;

static void expect(const char *what, int got, int want) {
    printf("  -> %s: %s (%d), HTTP %d", what, tryvox_status_str(got), got, tryvox_last_http_status());
    if (got != TRYVOX_OK)
        printf(", code \"%s\"\n     message: %s", tryvox_last_error_code(), tryvox_last_error());
    if (got != want) {
        printf("\n  !! expected %s", tryvox_status_str(want));
        failures++;
    }
    printf("\n");
}

static void on_log(void *user_data, int level, const char *message) {
    (void)user_data;
    if (level <= 1) printf("  [libtryvox %s] %s\n", level == 0 ? "error" : "warn", message);
}

/* Called by tryvox_hangup_all on this thread after each listing and each batch. */
static void on_sweep_progress(void *user_data, const struct tryvox_sweep *sw) {
    int *calls = user_data;
    ++*calls;
    printf("  .. progress: %" PRIu64 " listings, %" PRIu64 " ended, %" PRIu64 " gone already, %" PRIu64
           " failed, %" PRIu64 " still live\n",
           sw->listings, sw->ended, sw->already_gone, sw->failed, sw->still_live);
}

#define SEEDED 36

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s BASE_URL ACCOUNT_ID API_KEY\n", argv[0]);
        return 2;
    }
    const char *base = argv[1], *account = argv[2], *key = argv[3];
    if (sscanf(base, "http://%255[^:]:%15[0-9]", host, port) != 2) {
        fprintf(stderr, "demo: BASE_URL must be http://HOST:PORT\n");
        return 2;
    }
    char path[512], buf[65536], body[1024], call_uuid[128], val[128];
    printf("libtryvox %s demo against the TryVox simulator at %s\n\n", tryvox_version(), base);

    /* 1. Create a call (simulator API), with the simulator's own inbox as hangup_url. */
    snprintf(path, sizeof path, "/v1/voice/accounts/%s/calls", account);
    snprintf(body, sizeof body,
             "{\"from\":\"+14155550100\",\"to\":\"+14155550199\",\"answer_url\":\"%s/answer\","
             "\"hangup_url\":\"%s/_sim/inbox\"}",
             base, base);
    int st = http("POST", path, key, body, buf, sizeof buf);
    if (st != 201 || !json_str(buf, "call_uuid", call_uuid, sizeof call_uuid)) {
        fprintf(stderr, "demo: creating a call failed (HTTP %d): %s\n", st, buf);
        return 1;
    }
    json_str(buf, "status", val, sizeof val);
    printf("1. created call %s (status: %s)\n", call_uuid, val);

    /* 2. Hang it up with libtryvox. */
    tryvox_options *o = tryvox_options_new();
    tryvox_options_set_base_url(o, base);
    tryvox_options_set_user_agent(o, "tryvox-demo/1.0");
    tryvox_options_set_log_callback(o, on_log, NULL);
    tryvox_client *client = tryvox_client_new_with_options(account, key, o);
    tryvox_options_free(o);
    if (!client) {
        fprintf(stderr, "demo: tryvox_client_new_with_options: %s\n", tryvox_last_error());
        return 1;
    }
    printf("2. tryvox_hangup(\"%s\")\n", call_uuid);
    expect("result", tryvox_hangup(client, call_uuid), TRYVOX_OK);

    /* 3. The webhook the simulator delivered to hangup_url. */
    printf("3. hangup webhook received at hangup_url:\n");
    int seen = 0;
    for (int i = 0; i < 40 && !seen; i++) {
        st = http("GET", "/_sim/inbox", key, NULL, buf, sizeof buf);
        char *hit = st == 200 ? strstr(buf, call_uuid) : NULL;
        if (hit) {
            char event[64] = "", reason[64] = "", status[64] = "";
            json_str(buf, "event", event, sizeof event);
            json_str(buf, "end_reason", reason, sizeof reason);
            json_str(buf, "status", status, sizeof status);
            printf("  -> event %s, status %s, end_reason: %s\n", event, status, reason);
            if (strcmp(reason, "api-hangup") != 0) failures++;
            seen = 1;
        } else {
            usleep(50 * 1000);
        }
    }
    if (!seen) {
        printf("  !! no webhook arrived\n");
        failures++;
    }

    /* 4. The call as the API now reports it. */
    snprintf(path, sizeof path, "/v1/voice/accounts/%s/calls/%s", account, call_uuid);
    st = http("GET", path, key, NULL, buf, sizeof buf);
    char status[64] = "", reason[64] = "", end_time[64] = "";
    json_str(buf, "status", status, sizeof status);
    json_str(buf, "end_reason", reason, sizeof reason);
    json_str(buf, "end_time", end_time, sizeof end_time);
    printf("4. GET call: status %s, end_reason %s, end_time %s\n", status, reason, end_time);
    if (strcmp(status, "completed") != 0 || strcmp(reason, "api-hangup") != 0) failures++;

    /* 5. Hang up again: the call is over. */
    printf("5. tryvox_hangup(\"%s\") again\n", call_uuid);
    expect("result", tryvox_hangup(client, call_uuid), TRYVOX_ALREADY_ENDED);

    /* 6. An id the API has never seen. */
    printf("6. tryvox_hangup(\"00000000-0000-4000-8000-000000000000\")\n");
    expect("result", tryvox_hangup(client, "00000000-0000-4000-8000-000000000000"), TRYVOX_NOT_FOUND);

    /* 7. Bad input never reaches the network. */
    printf("7. tryvox_hangup(\"../../admin\")\n");
    expect("result", tryvox_hangup(client, "../../admin"), TRYVOX_INVALID_ARGUMENT);

    /* 8. The emergency sweep: seed calls (simulator API), end every live one at once. */
    snprintf(body, sizeof body, "{\"count\":%d}", SEEDED);
    st = http("POST", "/_sim/seed", key, body, buf, sizeof buf);
    if (st != 200) {
        fprintf(stderr, "demo: seeding calls failed (HTTP %d): %s\n", st, buf);
        return 1;
    }
    printf("8. seeded %d live calls; tryvox_hangup_all (every live call, 8 at once)\n", SEEDED);
    tryvox_sweep sw;
    memset(&sw, 0, sizeof sw);
    sw.size = sizeof sw;
    sw.max_parallel = 8;
    sw.timeout_ms = 20000;
    int progress_calls = 0;
    sw.progress = on_sweep_progress;
    sw.user_data = &progress_calls;
    int rc = tryvox_hangup_all(client, &sw); /* its last HTTP status means little: not shown */
    printf("  -> result: %s (%d)\n", tryvox_status_str(rc), rc);
    if (rc != TRYVOX_OK) {
        printf("  !! expected ok; message: %s\n", tryvox_last_error());
        failures++;
    }
    printf("  -> %" PRIu64 " ended, %" PRIu64 " gone already, %" PRIu64 " failed, %" PRIu64
           " still live, %" PRIu64 " listings, %d progress calls\n",
           sw.ended, sw.already_gone, sw.failed, sw.still_live, sw.listings, progress_calls);
    if (sw.ended != SEEDED || sw.still_live != 0 || sw.failed != 0 || progress_calls == 0) {
        printf("  !! expected %d ended, none left or failed, progress reported\n", SEEDED);
        failures++;
    }

    /* 9. What the client did over its life. */
    tryvox_stats stats;
    memset(&stats, 0, sizeof stats);
    stats.size = sizeof stats;
    printf("9. tryvox_client_stats\n");
    if (tryvox_client_stats(client, &stats) != TRYVOX_OK) {
        printf("  !! %s\n", tryvox_last_error());
        failures++;
    } else {
        printf("  -> hangups by status:");
        for (int i = 0; i < 32; i++)
            if (stats.hangups_by_status[i])
                printf(" %s %" PRIu64 ";", tryvox_status_str(i), stats.hangups_by_status[i]);
        printf("\n  -> %" PRIu64 " HTTP attempts; retries: %" PRIu64 " connection, %" PRIu64
               " rate-limited, %" PRIu64 " server error\n",
               stats.attempts, stats.retries_connection, stats.retries_rate_limited,
               stats.retries_server_error);
        printf("  -> latency p50 %.2f ms, p99 %.2f ms, max %.2f ms; %" PRIu64 " connections opened\n",
               stats.latency_p50_us / 1000.0, stats.latency_p99_us / 1000.0,
               stats.latency_max_us / 1000.0, stats.connections_opened);
        /* Steps 2 and 8 ended calls; 5, 6 and 7 met an ended, an unknown and a bad id. */
        if (stats.hangups_by_status[TRYVOX_OK] != 1 + sw.ended ||
            stats.hangups_by_status[TRYVOX_ALREADY_ENDED] != 1 ||
            stats.hangups_by_status[TRYVOX_NOT_FOUND] != 1 ||
            stats.hangups_by_status[TRYVOX_INVALID_ARGUMENT] != 1 || stats.in_flight != 0) {
            printf("  !! expected %" PRIu64 " ok, 1 already ended, 1 not found, 1 invalid, none in flight\n",
                   1 + sw.ended);
            failures++;
        }
    }

    tryvox_client_free(client);
    printf("\n%s\n", failures ? "DEMO FAILED" : "demo complete: every outcome as documented");
    return failures ? 1 : 0;
}
