/*
 * aws-lc's allocator hooks, defined inside libtryvox.
 *
 * aws-lc (rustls's crypto, linked into this library) calls OPENSSL_memory_alloc, _free,
 * _get_size and _realloc for every allocation when some object of the process defines
 * them: its references are weak and unprefixed, so in libtryvox.so they were dynamic
 * imports, and a host that defines the hooks for its own BoringSSL or AWS-LC would have
 * received libtryvox's TLS allocations, from our threads and under our locks. Defined
 * here, the references bind inside libtryvox.so at link time, and the library's version
 * script (rustc's: only tryvox_* is exported) keeps them local: nothing is imported or
 * exported. They do what aws-lc does without hooks: a size prefix, and the block wiped
 * before it is freed (keys and session secrets live there).
 *
 * Weak, and of default visibility, for libtryvox.a: a program that links it statically
 * together with its own hooks keeps its own definitions, still exported to its own shared
 * BoringSSL or AWS-LC (hidden ones would have won the link's visibility and hidden the
 * host's); libtryvox's TLS allocations then go through the host's hooks too (one
 * program, one allocator, its choice; docs/embedding.md). A module built from the .a
 * with --exclude-libs,ALL (res_tryvox) keeps ours, local.
 */
#define _DEFAULT_SOURCE /* explicit_bzero */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HOOK __attribute__((weak))

/* Room for the size, keeping malloc's 16-byte alignment. */
#define PREFIX 16

HOOK void *OPENSSL_memory_alloc(size_t size);
HOOK void OPENSSL_memory_free(void *ptr);
HOOK size_t OPENSSL_memory_get_size(void *ptr);
HOOK void *OPENSSL_memory_realloc(void *ptr, size_t size);

void *OPENSSL_memory_alloc(size_t size)
{
    unsigned char *p;
    if (size > SIZE_MAX - PREFIX) {
        return NULL;
    }
    p = malloc(size + PREFIX);
    if (p == NULL) {
        return NULL;
    }
    memcpy(p, &size, sizeof size);
    return p + PREFIX;
}

size_t OPENSSL_memory_get_size(void *ptr)
{
    size_t size;
    memcpy(&size, (unsigned char *)ptr - PREFIX, sizeof size);
    return size;
}

/* aws-lc never passes NULL. */
void OPENSSL_memory_free(void *ptr)
{
    unsigned char *p = (unsigned char *)ptr - PREFIX;
    explicit_bzero(p, OPENSSL_memory_get_size(ptr) + PREFIX);
    free(p);
}

/* As aws-lc does without a realloc hook: a new block, the old one copied and wiped. */
void *OPENSSL_memory_realloc(void *ptr, size_t size)
{
    void *fresh;
    size_t old;
    if (ptr == NULL) {
        return OPENSSL_memory_alloc(size);
    }
    fresh = OPENSSL_memory_alloc(size);
    if (fresh == NULL) {
        return NULL;
    }
    old = OPENSSL_memory_get_size(ptr);
    memcpy(fresh, ptr, old < size ? old : size);
    OPENSSL_memory_free(ptr);
    return fresh;
}
