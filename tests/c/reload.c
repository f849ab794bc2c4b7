/*
 * A module host's life: dlopen libtryvox, use it, dlclose it, five times over.
 * usage: TRYVOX_API_KEY=... reload LIBPATH BASE_URL ACCOUNT LIVE_ID x5 (the key is not
 * passed on the command line, where tools such as valgrind would print it)
 * Prints whether the library was still mapped after each dlclose (Rust thread-local
 * destructors registered by a thread that used the library keep it mapped until that
 * thread exits; glibc then unmaps it at the next dlclose or at exit).
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tryvox.h"

typedef tryvox_options *(*opt_new_fn)(void);
typedef int (*opt_url_fn)(tryvox_options *, const char *);
typedef void (*opt_free_fn)(tryvox_options *);
typedef tryvox_client *(*new_fn)(const char *, const char *, const tryvox_options *);
typedef int (*hangup_fn)(tryvox_client *, const char *);
typedef void (*free_fn)(tryvox_client *);
typedef const char *(*str_fn)(void);

static int mapped(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char line[512];
    int found = 0;
    while (f && fgets(line, sizeof line, f))
        if (strstr(line, "libtryvox")) found = 1;
    if (f) fclose(f);
    return found;
}

int main(int argc, char **argv) {
    const char *key = getenv("TRYVOX_API_KEY");
    if (argc != 9 || !key) {
        fprintf(stderr, "usage: TRYVOX_API_KEY=... %s LIB BASE ACCOUNT ID1..ID5\n", argv[0]);
        return 2;
    }
    int failures = 0;
    for (int round = 0; round < 5; round++) {
        void *h = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
        if (!h) {
            fprintf(stderr, "dlopen: %s\n", dlerror());
            return 1;
        }
        /* POSIX's idiom for turning dlsym's void * into a function pointer. */
#define LOAD(var, type, name) \
    type var;                 \
    *(void **)(&var) = dlsym(h, name)
        LOAD(opt_new, opt_new_fn, "tryvox_options_new");
        LOAD(opt_url, opt_url_fn, "tryvox_options_set_base_url");
        LOAD(opt_free, opt_free_fn, "tryvox_options_free");
        LOAD(client_new, new_fn, "tryvox_client_new_with_options");
        LOAD(hangup, hangup_fn, "tryvox_hangup");
        LOAD(client_free, free_fn, "tryvox_client_free");
        LOAD(last_error, str_fn, "tryvox_last_error");
        if (!opt_new || !opt_url || !opt_free || !client_new || !hangup || !client_free || !last_error) {
            fprintf(stderr, "dlsym failed\n");
            return 1;
        }
        tryvox_options *o = opt_new();
        opt_url(o, argv[2]);
        tryvox_client *c = client_new(argv[3], key, o);
        opt_free(o);
        int rc = c ? hangup(c, argv[4 + round]) : -1;
        int rc2 = c ? hangup(c, "no-such-call") : -1;
        if (rc != TRYVOX_OK || rc2 != TRYVOX_NOT_FOUND) {
            fprintf(stderr, "round %d: %d %d: %s\n", round, rc, rc2, last_error());
            failures++;
        }
        client_free(c);
        dlclose(h);
        printf("round %d: hangup ok, still mapped after dlclose: %s\n", round, mapped() ? "yes" : "no");
    }
    printf("reload: %s\n", failures ? "FAILED" : "ok");
    return failures ? 1 : 0;
}
