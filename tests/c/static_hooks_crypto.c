/* A host's own BoringSSL/AWS-LC as a shared library, as its crypto/mem.c refers to the
 * allocator hooks: weakly, used when the process defines them (tests/tls_groups.rs). */
#include <stddef.h>
extern void *OPENSSL_memory_alloc(size_t) __attribute__((weak));
extern void OPENSSL_memory_free(void *) __attribute__((weak));
int hostcrypto_uses_hooks(void);
int hostcrypto_uses_hooks(void)
{
    if (OPENSSL_memory_alloc == NULL) {
        return 0;
    }
    OPENSSL_memory_free(OPENSSL_memory_alloc(32));
    return 1;
}
