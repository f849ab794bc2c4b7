/* A program that defines the allocator hooks for its own crypto library (a shared one,
 * static_hooks_crypto.c) and links libtryvox.a statically: linking libtryvox must not
 * change which allocator the host's own library uses (tests/tls_groups.rs). */
#include <stdio.h>
#include <stdlib.h>
#include "tryvox.h"

int hostcrypto_uses_hooks(void);
void *OPENSSL_memory_alloc(size_t size);
void OPENSSL_memory_free(void *ptr);
size_t OPENSSL_memory_get_size(void *ptr);

static long calls;

void *OPENSSL_memory_alloc(size_t size)
{
    size_t *p = malloc(size + 16);
    if (!p) {
        return NULL;
    }
    calls++;
    *p = size;
    return (char *)p + 16;
}

void OPENSSL_memory_free(void *ptr)
{
    free((char *)ptr - 16);
}

size_t OPENSSL_memory_get_size(void *ptr)
{
    return *(size_t *)(void *)((char *)ptr - 16);
}

int main(void)
{
    int used = hostcrypto_uses_hooks();
    printf("libtryvox %s; the host's crypto library uses the host's hooks: %s (%ld)\n",
           tryvox_version(), used ? "yes" : "NO", calls);
    return used ? 0 : 1;
}
