/*
 * End-to-end against tryvox-sim, from C. usage: e2e_sim BASE_URL ACCOUNT KEY ID...
 * The ids are live (ringing) calls seeded by the test. Exits non-zero on any mismatch.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tryvox.h"

static int failures = 0;
#define CHECK(cond, ...)                                                          \
    do {                                                                          \
        if (!(cond)) {                                                            \
            failures++;                                                           \
            fprintf(stderr, "FAIL line %d: %s: ", __LINE__, #cond);               \
            fprintf(stderr, __VA_ARGS__);                                         \
            fprintf(stderr, "\n");                                                \
        }                                                                         \
    } while (0)

struct tally {
    int ok, other;
};

static void done(void *user_data, const char *call_uuid, int status, int http_status,
                 const char *message) {
    struct tally *t = (struct tally *)user_data;
    (void)call_uuid;
    (void)message;
    if (status == TRYVOX_OK && http_status == 204) t->ok++;
    else t->other++;
}

int main(int argc, char **argv) {
    if (argc < 8) {
        fprintf(stderr, "usage: %s BASE ACCOUNT KEY ID ID ID ID...\n", argv[0]);
        return 2;
    }
    tryvox_options *o = tryvox_options_new();
    CHECK(tryvox_options_set_base_url(o, argv[1]) == TRYVOX_OK, "%s", tryvox_last_error());
    tryvox_client *c = tryvox_client_new_with_options(argv[2], argv[3], o);
    tryvox_options_free(o);
    CHECK(c != NULL, "%s", tryvox_last_error());
    if (!c) return 1;
    char **ids = argv + 4;
    int n = argc - 4;

    CHECK(tryvox_hangup(c, ids[0]) == TRYVOX_OK, "%s", tryvox_last_error());
    CHECK(tryvox_last_http_status() == 204, "%d", tryvox_last_http_status());
    CHECK(tryvox_hangup(c, ids[0]) == TRYVOX_ALREADY_ENDED, "%s", tryvox_last_error());
    CHECK(strcmp(tryvox_last_error_code(), "call_already_ended") == 0, "%s", tryvox_last_error_code());
    CHECK(tryvox_hangup(c, "no-such-call") == TRYVOX_NOT_FOUND, "%s", tryvox_last_error());
    CHECK(strcmp(tryvox_last_error_code(), "call_not_found") == 0, "%s", tryvox_last_error_code());

    /* Bulk over the next ids, async over the last one. */
    int *out = calloc((size_t)n, sizeof *out);
    CHECK(tryvox_hangup_many(c, (const char *const *)(ids + 1), (size_t)(n - 2), out, 8) == TRYVOX_OK, "many");
    for (int i = 0; i < n - 2; i++) CHECK(out[i] == TRYVOX_OK, "many[%d] = %d", i, out[i]);
    free(out);
    struct tally t = {0, 0};
    CHECK(tryvox_hangup_async(c, ids[n - 1], done, &t) == TRYVOX_OK, "async");
    tryvox_client_free(c);
    CHECK(t.ok == 1 && t.other == 0, "async ok=%d other=%d", t.ok, t.other);

    /* A wrong key: 401 from the simulator. */
    o = tryvox_options_new();
    tryvox_options_set_base_url(o, argv[1]);
    c = tryvox_client_new_with_options(argv[2], "tvx_sk_test_wrong", o);
    tryvox_options_free(o);
    CHECK(tryvox_hangup(c, "anything") == TRYVOX_UNAUTHORIZED, "%s", tryvox_last_error());
    CHECK(strcmp(tryvox_last_error_code(), "UNAUTHORIZED") == 0, "%s", tryvox_last_error_code());
    tryvox_client_free(c);

    printf("e2e against the simulator: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
