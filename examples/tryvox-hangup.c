/*
 * tryvox-hangup: hang up calls from the command line.
 *
 *   TRYVOX_ACCOUNT_ID=AC123456 TRYVOX_API_KEY=tvx_sk_live_... tryvox-hangup CALL_UUID...
 *
 * Optional: TRYVOX_BASE_URL (default https://api.tryvox.io), TRYVOX_TENANT_ID.
 * Options: -h/--help prints the usage and exits 0; `--` ends the options (for an id that
 * starts with '-'). Any other argument starting with '-' is a usage error: nothing is sent.
 * Prints one line per call. Exit status: 0 when every call was hung up, otherwise the
 * tryvox_status number of the first failure (1 not found, 2 already ended, ...);
 * 64 for a usage error.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tryvox.h"

#define EXIT_USAGE 64

#define USAGE "usage: TRYVOX_ACCOUNT_ID=... TRYVOX_API_KEY=... %s [--] CALL_UUID...\n"

/* A usage error: the short form on stderr. */
static int usage_error(const char *prog) {
    fprintf(stderr, USAGE "Run %s --help for the variables, inputs and exit statuses.\n", prog, prog);
    return EXIT_USAGE;
}

static void help(const char *prog) {
    printf(USAGE
            "       %s -h | --help\n"
            "\n"
            "Hangs up each call named (DELETE /v1/voice/accounts/{account}/calls/{id}), in\n"
            "order, and prints one line per call.\n"
            "\n"
            "Input: one or more call ids (1 to 128 characters from A-Z a-z 0-9 - _ . ~).\n"
            "  Put `--` before an id that starts with '-'.\n"
            "\n"
            "Environment:\n"
            "  TRYVOX_ACCOUNT_ID  the account (auth_id); required\n"
            "  TRYVOX_API_KEY     the API key; required, never printed\n"
            "  TRYVOX_BASE_URL    the API's URL (default https://api.tryvox.io)\n"
            "  TRYVOX_TENANT_ID   sent as X-Tenant-ID (optional)\n"
            "\n"
            "Exit status:\n"
            "  0   every call was hung up (or --help)\n"
            "  N   the tryvox status of the first failure: 1 not found, 2 already ended,\n"
            "      3 invalid argument, 4 unauthorized, ... 13 busy (see tryvox.h)\n"
            "  64  usage error (no id, an unknown option, TRYVOX_ACCOUNT_ID or TRYVOX_API_KEY\n"
            "      unset, TRYVOX_BASE_URL or TRYVOX_TENANT_ID invalid): nothing was sent\n",
            prog, prog);
}

int main(int argc, char **argv) {
    const char *prog = argc > 0 && argv[0] ? argv[0] : "tryvox-hangup";
    /* Options first, all of them, before anything is sent. `--` ends them (and is not an id). */
    int dashdash = 0, ids = 0;
    for (int i = 1; i < argc; i++) {
        if (dashdash || argv[i][0] != '-') {
            ids++;
        } else if (strcmp(argv[i], "--") == 0) {
            dashdash = i;
        } else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            help(prog);
            return 0;
        } else {
            fprintf(stderr, "%s: unknown option %s (put `--` before an id that starts with '-')\n",
                    prog, argv[i]);
            return usage_error(prog);
        }
    }
    const char *account = getenv("TRYVOX_ACCOUNT_ID");
    const char *key = getenv("TRYVOX_API_KEY");
    if (ids == 0 || !account || !key) return usage_error(prog);
    tryvox_options *o = tryvox_options_new();
    const char *base = getenv("TRYVOX_BASE_URL");
    const char *tenant = getenv("TRYVOX_TENANT_ID");
    if ((base && tryvox_options_set_base_url(o, base) != TRYVOX_OK) ||
        (tenant && tryvox_options_set_tenant_id(o, tenant) != TRYVOX_OK) ||
        tryvox_options_set_user_agent(o, "tryvox-hangup-cli") != TRYVOX_OK) {
        fprintf(stderr, "tryvox-hangup: %s\n", tryvox_last_error());
        tryvox_options_free(o);
        return EXIT_USAGE;
    }
    tryvox_client *c = tryvox_client_new_with_options(account, key, o);
    tryvox_options_free(o);
    if (!c) {
        fprintf(stderr, "tryvox-hangup: %s\n", tryvox_last_error());
        return TRYVOX_INVALID_ARGUMENT;
    }
    int first_failure = TRYVOX_OK;
    for (int i = 1; i < argc; i++) {
        if (i == dashdash) continue;
        int rc = tryvox_hangup(c, argv[i]);
        if (rc == TRYVOX_OK) {
            printf("%s: hung up\n", argv[i]);
        } else {
            printf("%s: %s: %s\n", argv[i], tryvox_status_str(rc), tryvox_last_error());
            if (first_failure == TRYVOX_OK) first_failure = rc;
        }
    }
    tryvox_client_free(c);
    return first_failure;
}
