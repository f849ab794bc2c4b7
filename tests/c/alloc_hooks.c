/* A host process that defines BoringSSL/AWS-LC's
 * allocator hooks (for its own copy of the library) must never see libtryvox's: the
 * aws-lc inside libtryvox refers to OPENSSL_memory_alloc/free/get_size/realloc weakly and
 * unprefixed, and libtryvox defines them itself (src/aws_lc_mem.c). Prints how often the
 * host's hooks ran during one https hangup. usage: alloc_hooks PORT CA_FILE (tests/tls_groups.rs) */
#include <stdio.h>
#include <stdlib.h>
#include "tryvox.h"

static long n_alloc, n_free;

void *OPENSSL_memory_alloc(size_t size);
void OPENSSL_memory_free(void *ptr);
size_t OPENSSL_memory_get_size(void *ptr);

void *OPENSSL_memory_alloc(size_t size)
{
    size_t *p = malloc(size + sizeof(size_t));
    if (!p) {
        return NULL;
    }
    *p = size;
    __sync_fetch_and_add(&n_alloc, 1);
    return p + 1;
}

void OPENSSL_memory_free(void *ptr)
{
    __sync_fetch_and_add(&n_free, 1);
    free((size_t *)ptr - 1);
}

size_t OPENSSL_memory_get_size(void *ptr)
{
    return ((size_t *)ptr)[-1];
}

int main(int argc, char **argv)
{
    struct tryvox_options *o;
    struct tryvox_client *c;
    char url[64];
    int rc;
    if (argc != 3) {
        return 2;
    }
    o = tryvox_options_new();
    snprintf(url, sizeof url, "https://localhost:%s", argv[1]);
    tryvox_options_set_base_url(o, url);
    tryvox_options_set_ca_file(o, argv[2]);
    tryvox_options_set_max_retries(o, 0);
    c = tryvox_client_new_with_options("AC123456", "tvx_sk_hook_test_0123", o);
    if (!c) {
        puts("no client");
        return 2;
    }
    rc = tryvox_hangup(c, "hook-call");
    printf("hangup rc=%d host_alloc=%ld host_free=%ld\n", rc, __sync_fetch_and_add(&n_alloc, 0),
           __sync_fetch_and_add(&n_free, 0));
    tryvox_client_free(c);
    tryvox_options_free(o);
    return 0;
}
