/*
 * The C harness: a program written only from include/tryvox.h, run by tests/c_harness.rs
 * against a real HTTP server on 127.0.0.1 (and under valgrind when it is installed).
 *
 * usage: harness BASE_URL
 * The server answers according to the call id (see tests/support/mod.rs).
 * Prints one line per failed check and exits non-zero if any failed.
 *
 * The log and async callbacks run on the library's threads, several at once, and CHECK
 * is used inside them: every counter they touch is a C11 atomic (<stdatomic.h>, which
 * GCC and Clang also provide, warning-free, in the C99 mode the tests compile with).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tryvox.h"

static atomic_int failures = 0;
static atomic_int checks = 0;

#define CHECK(cond, ...)                                                   \
    do {                                                                   \
        atomic_fetch_add(&checks, 1);                                      \
        if (!(cond)) {                                                     \
            atomic_fetch_add(&failures, 1);                                \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
            fprintf(stderr, __VA_ARGS__);                                  \
            fprintf(stderr, "\n");                                         \
        }                                                                  \
    } while (0)

static const char *AUTH = "AC123456";
static const char *KEY = "tvx_sk_test_s3cr3t-Key-Never-Shown";

struct expect {
    const char *id;
    int status;
    int http;
    const char *code;
};

static void check_hangup(tryvox_client *c, const struct expect *e) {
    int rc = tryvox_hangup(c, e->id);
    CHECK(rc == e->status, "%s: got %d (%s), want %d: %s", e->id, rc, tryvox_status_str(rc),
          e->status, tryvox_last_error());
    CHECK(tryvox_last_http_status() == e->http, "%s: http %d want %d", e->id,
          tryvox_last_http_status(), e->http);
    CHECK(strcmp(tryvox_last_error_code(), e->code) == 0, "%s: code '%s' want '%s'", e->id,
          tryvox_last_error_code(), e->code);
    if (rc == TRYVOX_OK)
        CHECK(tryvox_last_error()[0] == '\0', "%s: message on success: %s", e->id, tryvox_last_error());
    else
        CHECK(tryvox_last_error()[0] != '\0', "%s: no message", e->id);
    CHECK(strstr(tryvox_last_error(), KEY) == NULL, "%s: key in message", e->id);
}

/* Called from the calling thread and from the client's worker threads, concurrently. */
static atomic_int log_lines = 0;
static void on_log(void *user_data, int level, const char *message) {
    (void)user_data;
    CHECK(level >= 0 && level <= 3, "level %d", level);
    CHECK(strstr(message, KEY) == NULL, "key in log line");
    atomic_fetch_add(&log_lines, 1);
}

/* Bumped by on_done on whichever worker thread ran the hangup, possibly several at once. */
struct async_state {
    atomic_int calls;
    atomic_int ok;
    atomic_int not_found;
};

static void on_done(void *user_data, const char *call_uuid, int status, int http_status,
                    const char *message) {
    struct async_state *st = (struct async_state *)user_data;
    atomic_fetch_add(&st->calls, 1);
    if (strncmp(call_uuid, "ok-", 3) == 0) {
        if (status == TRYVOX_OK && http_status == 204 && message[0] == '\0')
            atomic_fetch_add(&st->ok, 1);
    } else if (status == TRYVOX_NOT_FOUND && http_status == 404 && message[0] != '\0') {
        atomic_fetch_add(&st->not_found, 1);
    }
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s BASE_URL\n", argv[0]);
        return 2;
    }
    /* The host's default SIGPIPE disposition: the library must never raise it. */
    signal(SIGPIPE, SIG_DFL);

    CHECK(strlen(tryvox_version()) > 0, "version");
    CHECK(strcmp(tryvox_status_str(TRYVOX_NOT_FOUND), "call not found") == 0, "status_str");
    CHECK(strcmp(tryvox_status_str(999), "unknown status") == 0, "unknown status_str");
    CHECK(TRYVOX_OK == 0 && TRYVOX_NOT_FOUND == 1 && TRYVOX_ALREADY_ENDED == 2 &&
              TRYVOX_INVALID_ARGUMENT == 3 && TRYVOX_UNAUTHORIZED == 4 && TRYVOX_FORBIDDEN == 5 &&
              TRYVOX_RATE_LIMITED == 6 && TRYVOX_SERVER_ERROR == 7 && TRYVOX_TIMEOUT == 8 &&
              TRYVOX_NETWORK_ERROR == 9 && TRYVOX_TLS_ERROR == 10 &&
              TRYVOX_PROTOCOL_ERROR == 11 && TRYVOX_INTERNAL_ERROR == 12,
          "status numbers");

    /* Bad constructor input: NULL and a message. */
    CHECK(tryvox_client_new(NULL, KEY) == NULL, "NULL auth");
    CHECK(strstr(tryvox_last_error(), "auth_id") != NULL, "%s", tryvox_last_error());
    CHECK(tryvox_client_new(AUTH, "bad key") == NULL, "key with space");
    CHECK(strstr(tryvox_last_error(), "api_key") != NULL, "%s", tryvox_last_error());
    CHECK(tryvox_client_new("../x", KEY) == NULL, "path in auth id");

    tryvox_options *o = tryvox_options_new();
    CHECK(o != NULL, "options");
    CHECK(tryvox_options_set_base_url(o, "ftp://x") == TRYVOX_INVALID_ARGUMENT, "ftp");
    CHECK(tryvox_options_set_base_url(o, argv[1]) == TRYVOX_OK, "%s", tryvox_last_error());
    CHECK(tryvox_options_set_timeout_ms(o, 0) == TRYVOX_INVALID_ARGUMENT, "timeout 0");
    CHECK(tryvox_options_set_timeout_ms(o, 5000) == TRYVOX_OK, "timeout");
    CHECK(tryvox_options_set_connect_timeout_ms(o, 1000) == TRYVOX_OK, "connect timeout");
    CHECK(tryvox_options_set_max_retries(o, 2) == TRYVOX_OK, "retries");
    CHECK(tryvox_options_set_tenant_id(o, "bad tenant") == TRYVOX_INVALID_ARGUMENT, "tenant");
    CHECK(tryvox_options_set_tenant_id(o, "tenant-7") == TRYVOX_OK, "tenant");
    CHECK(tryvox_options_set_user_agent(o, "c-harness/1.0") == TRYVOX_OK, "ua");
    CHECK(tryvox_options_set_log_callback(o, on_log, NULL) == TRYVOX_OK, "log");
    tryvox_client *c = tryvox_client_new_with_options(AUTH, KEY, o);
    CHECK(c != NULL, "client: %s", tryvox_last_error());
    tryvox_options_free(o); /* the client copied what it needs */
    if (c == NULL) return 1;

    const struct expect cases[] = {
        {"ok-c1", TRYVOX_OK, 204, ""},
        {"ok200-c1", TRYVOX_OK, 200, ""},
        {"nf-flat-c1", TRYVOX_NOT_FOUND, 404, "call_not_found"},
        {"nf-nested-c1", TRYVOX_NOT_FOUND, 404, "NOT_FOUND"},
        {"end-flat-c1", TRYVOX_ALREADY_ENDED, 404, "call_already_ended"},
        {"end-nested-c1", TRYVOX_ALREADY_ENDED, 404, "call_already_ended"},
        {"nf-empty-c1", TRYVOX_NOT_FOUND, 404, ""},
        {"nf-html-c1", TRYVOX_NOT_FOUND, 404, ""},
        {"st-401-c1", TRYVOX_UNAUTHORIZED, 401, "E_401"},
        {"st-403-c1", TRYVOX_FORBIDDEN, 403, "E_403"},
        {"rasec-60-9-c1", TRYVOX_RATE_LIMITED, 429, "RATE_LIMITED"},
        {"flaky-500-9-c1", TRYVOX_SERVER_ERROR, 500, "INTERNAL_ERROR"},
        {"st-418-c1", TRYVOX_PROTOCOL_ERROR, 418, "E_418"},
        {"flaky-503-1-c1", TRYVOX_OK, 204, ""},
        {"drop-1-c1", TRYVOX_OK, 204, ""},
        {"retry-ended-c1", TRYVOX_ALREADY_ENDED, 404, "call_already_ended"},
        {"echo-key-c1", TRYVOX_UNAUTHORIZED, 401, "UNAUTHORIZED"},
        {"huge-c1", TRYVOX_SERVER_ERROR, 500, ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_hangup(c, &cases[i]);

    /* Invalid ids: INVALID_ARGUMENT, no HTTP status, a message naming the argument. */
    const char *bad_ids[] = {"", ".", "..", "a/b", "a b", "a?b", "a#b", "a\r\nb", "\xc3\xa9"};
    for (size_t i = 0; i < sizeof bad_ids / sizeof bad_ids[0]; i++) {
        int rc = tryvox_hangup(c, bad_ids[i]);
        CHECK(rc == TRYVOX_INVALID_ARGUMENT, "bad id %zu: %d", i, rc);
        CHECK(tryvox_last_http_status() == 0, "bad id http");
        CHECK(strstr(tryvox_last_error(), "call_uuid") != NULL, "%s", tryvox_last_error());
    }
    CHECK(tryvox_hangup(NULL, "ok-x") == TRYVOX_INVALID_ARGUMENT, "NULL client");
    CHECK(tryvox_hangup(c, NULL) == TRYVOX_INVALID_ARGUMENT, "NULL id");

    /* Async: every callback once, delivered by the time free returns. */
    struct async_state st;
    atomic_init(&st.calls, 0);
    atomic_init(&st.ok, 0);
    atomic_init(&st.not_found, 0);
    char id[64];
    for (int i = 0; i < 50; i++) {
        snprintf(id, sizeof id, "%s%d", (i % 2) ? "nf-flat-a" : "ok-a", i);
        CHECK(tryvox_hangup_async(c, id, on_done, &st) == TRYVOX_OK, "async %d", i);
    }
    CHECK(tryvox_hangup_async(c, "a/b", on_done, &st) == TRYVOX_INVALID_ARGUMENT, "async bad id");

    /* Bulk. */
    const char *many[] = {"ok-m1", "nf-flat-m2", "end-flat-m3", "ok-m4"};
    int out[4] = {-1, -1, -1, -1};
    CHECK(tryvox_hangup_many(c, many, 4, out, 0) == TRYVOX_OK, "many: %s", tryvox_last_error());
    CHECK(out[0] == TRYVOX_OK && out[1] == TRYVOX_NOT_FOUND && out[2] == TRYVOX_ALREADY_ENDED &&
              out[3] == TRYVOX_OK,
          "many statuses %d %d %d %d", out[0], out[1], out[2], out[3]);

    tryvox_client_free(c); /* every callback has returned: the loads below see their counts */
    int calls = atomic_load(&st.calls), ok = atomic_load(&st.ok), nf = atomic_load(&st.not_found);
    CHECK(calls == 50 && ok == 25 && nf == 25, "async: %d calls %d ok %d nf", calls, ok, nf);
    CHECK(atomic_load(&log_lines) > 0, "log callback was called");
    tryvox_client_free(NULL);

    /* Clear text to a non-loopback host is refused unless allowed. */
    o = tryvox_options_new();
    tryvox_options_set_base_url(o, "http://192.0.2.1");
    CHECK(tryvox_client_new_with_options(AUTH, KEY, o) == NULL, "insecure http refused");
    CHECK(strstr(tryvox_last_error(), "loopback") != NULL, "%s", tryvox_last_error());
    tryvox_options_allow_insecure_http(o, 1);
    c = tryvox_client_new_with_options(AUTH, KEY, o);
    CHECK(c != NULL, "insecure http allowed: %s", tryvox_last_error());
    tryvox_client_free(c);
    tryvox_options_free(o);

    int n_checks = atomic_load(&checks), n_failures = atomic_load(&failures);
    printf("c harness: %d checks, %d failures\n", n_checks, n_failures);
    return n_failures == 0 ? 0 : 1;
}
