/*
 * After tryvox_client_free, no copy of the API key is left anywhere in this process's
 * writable memory (heap, thread stacks, anonymous maps).
 * usage: wipe BASE_URL   (against the id-driven test server)
 *
 * The key is random, built in a stack buffer that this program wipes itself; the scanner
 * holds it only XOR-masked, so the scan cannot find its own needle. A scan while the
 * client is alive must find the key (the library's live copy): that shows the scan works.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tryvox.h"

#define SECRET_LEN 24
static unsigned char masked[SECRET_LEN]; /* the random part of the key, XOR 0x5A */

/* Counts occurrences of the unmasked needle in [p, p+len). */
static long count_in(const unsigned char *p, size_t len) {
    long hits = 0;
    for (size_t i = 0; i + SECRET_LEN <= len; i++) {
        if (p[i] != (masked[0] ^ 0x5A)) continue;
        size_t k = 1;
        while (k < SECRET_LEN && p[i + k] == (masked[k] ^ 0x5A)) k++;
        if (k == SECRET_LEN) hits++;
    }
    return hits;
}

static long scan(void) {
    FILE *maps = fopen("/proc/self/maps", "r");
    char line[512];
    long hits = 0;
    while (maps && fgets(line, sizeof line, maps)) {
        unsigned long lo, hi;
        char perms[5];
        if (sscanf(line, "%lx-%lx %4s", &lo, &hi, perms) != 3) continue;
        if (perms[0] != 'r' || perms[1] != 'w') continue;
        if (strstr(line, "[vvar]") || strstr(line, "[vsyscall]")) continue;
        hits += count_in((const unsigned char *)lo, hi - lo);
    }
    if (maps) fclose(maps);
    return hits;
}

int main(int argc, char **argv) {
    if (argc != 2) return 2;
    unsigned char rnd[SECRET_LEN];
    int fd = open("/dev/urandom", O_RDONLY);
    if (fd < 0 || read(fd, rnd, sizeof rnd) != (ssize_t)sizeof rnd) return 1;
    close(fd);
    static const char hex[] = "0123456789abcdef";
    char key[64] = "tvx_sk_test_";
    for (int i = 0; i < SECRET_LEN; i++) {
        char c = hex[rnd[i] & 15];
        key[12 + i] = c;
        masked[i] = (unsigned char)c ^ 0x5A;
    }
    key[12 + SECRET_LEN] = '\0';
    memset(rnd, 0, sizeof rnd);

    tryvox_options *o = tryvox_options_new();
    tryvox_options_set_base_url(o, argv[1]);
    tryvox_client *c = tryvox_client_new_with_options("AC123456", key, o);
    tryvox_options_free(o);
    explicit_bzero(key, sizeof key);
    if (!c) return 1;
    char id[32];
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof id, "ok-wipe-%d", i);
        if (tryvox_hangup(c, id) != TRYVOX_OK) return 1;
        snprintf(id, sizeof id, "nf-flat-wipe-%d", i);
        if (tryvox_hangup(c, id) != TRYVOX_NOT_FOUND) return 1;
    }
    long live = scan();
    tryvox_client_free(c);
    long after = scan();
    printf("key copies while the client lives: %ld; after tryvox_client_free: %ld\n", live, after);
    if (live == 0) {
        printf("wipe: the scan found no live copy, so it proves nothing\n");
        return 1;
    }
    return after == 0 ? 0 : 1;
}
