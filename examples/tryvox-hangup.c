/*
 * tryvox-hangup: hang up calls from the command line.
 *
 *   TRYVOX_ACCOUNT_ID=AC123456 TRYVOX_API_KEY=tvx_sk_live_... tryvox-hangup CALL_UUID...
 *
 * Optional: TRYVOX_BASE_URL (default https://api.tryvox.io), TRYVOX_TENANT_ID.
 * Prints one line per call. Exit status: 0 when every call was hung up, otherwise the
 * tryvox_status number of the first failure (1 not found, 2 already ended, ...);
 * 64 for a usage error.
 */
#include <stdio.h>
#include <stdlib.h>

#include "tryvox.h"

int main(int argc, char **argv) {
    const char *account = getenv("TRYVOX_ACCOUNT_ID");
    const char *key = getenv("TRYVOX_API_KEY");
    if (argc < 2 || !account || !key) {
        fprintf(stderr,
                "usage: TRYVOX_ACCOUNT_ID=... TRYVOX_API_KEY=... %s CALL_UUID...\n"
                "  optional: TRYVOX_BASE_URL, TRYVOX_TENANT_ID\n",
                argv[0]);
        return 64;
    }
    tryvox_options *o = tryvox_options_new();
    const char *base = getenv("TRYVOX_BASE_URL");
    const char *tenant = getenv("TRYVOX_TENANT_ID");
    if ((base && tryvox_options_set_base_url(o, base) != TRYVOX_OK) ||
        (tenant && tryvox_options_set_tenant_id(o, tenant) != TRYVOX_OK) ||
        tryvox_options_set_user_agent(o, "tryvox-hangup-cli") != TRYVOX_OK) {
        fprintf(stderr, "tryvox-hangup: %s\n", tryvox_last_error());
        tryvox_options_free(o);
        return 64;
    }
    tryvox_client *c = tryvox_client_new_with_options(account, key, o);
    tryvox_options_free(o);
    if (!c) {
        fprintf(stderr, "tryvox-hangup: %s\n", tryvox_last_error());
        return TRYVOX_INVALID_ARGUMENT;
    }
    int first_failure = TRYVOX_OK;
    for (int i = 1; i < argc; i++) {
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
