/*
 * tryvox-hangup: hang up calls from the command line (the incident tool).
 *
 *   TRYVOX_ACCOUNT_ID=AC123456 TRYVOX_API_KEY=tvx_sk_live_... tryvox-hangup CALL_UUID...
 *   ... tryvox-hangup --parallel 64 < ids.txt
 *   ... tryvox-hangup --all --from +14155551234 --json
 *
 * Ids come as arguments or one per line on stdin and go through tryvox_hangup_many in
 * chunks (the progress bar moves between chunks); --all runs tryvox_hangup_all (the bar
 * moves from its progress callback). The key and the account come from the environment
 * only: there is no option for them (a command line is visible to every user through ps).
 * Run it with --help for the options, the output formats and the exit statuses.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tryvox.h"

#define EXIT_USAGE 64        /* sysexits EX_USAGE */
#define EXIT_CANNOT_START 78 /* sysexits EX_CONFIG */
#define EXIT_OUTPUT 74       /* sysexits EX_IOERR: every call settled, the output failed */
#define EXIT_MAX_STATUS 63   /* a status above this exits 63 (64 and up are the CLI's own) */
#define DEFAULT_PARALLEL 32
#define MAX_PARALLEL 1024
#define CHUNK 1000 /* ids per tryvox_hangup_many call (at least 4 x --parallel) */
#define MAX_ID_LEN 128
#define NSTATUS 64 /* statuses counted one by one; above that they share the last slot */

#define USAGE                                                                                \
    "usage: %s [options] [--] CALL_UUID...\n"                                                \
    "       %s [options] [-] < ids.txt\n"                                                    \
    "       %s --all [--from NUM] [--to NUM] [--direction D] [--timeout-ms MS] [options]\n"

static const char *const STATUS_NAMES[] = {
    "TRYVOX_OK",           "TRYVOX_NOT_FOUND",     "TRYVOX_ALREADY_ENDED",  "TRYVOX_INVALID_ARGUMENT",
    "TRYVOX_UNAUTHORIZED", "TRYVOX_FORBIDDEN",     "TRYVOX_RATE_LIMITED",   "TRYVOX_SERVER_ERROR",
    "TRYVOX_TIMEOUT",      "TRYVOX_NETWORK_ERROR", "TRYVOX_TLS_ERROR",      "TRYVOX_PROTOCOL_ERROR",
    "TRYVOX_INTERNAL_ERROR", "TRYVOX_BUSY",
};
#define NNAMES ((int)(sizeof STATUS_NAMES / sizeof STATUS_NAMES[0]))

/* "TRYVOX_NOT_FOUND", or "TRYVOX_STATUS_<n>" for a number a newer library added. */
static const char *status_name(int status, char buf[32]) {
    if (status >= 0 && status < NNAMES) return STATUS_NAMES[status];
    snprintf(buf, 32, "TRYVOX_STATUS_%d", status);
    return buf;
}

static const char *const HELP[] = {
    "\n",
    "Hangs up each call named (DELETE /v1/voice/accounts/{account}/calls/{id}), up to\n",
    "--parallel at once, and prints one line per call. With --all, ends every live call\n",
    "(ringing or in-progress) of the account, within the tenant, that the filters\n",
    "select, listing again until a listing finds none left.\n",
    "\n",
    "Input: call ids (1 to 128 characters from A-Z a-z 0-9 - _ . ~) as arguments or,\n",
    "  when there is none, one per line on stdin (blank lines skipped, spaces around an\n",
    "  id ignored); stdin must then not be a terminal, unless `-` is given (the only\n",
    "  id: read stdin). Put `--` before an id that starts with '-'. An invalid id is\n",
    "  reported with status 3 and not sent; the others are.\n",
    "\n",
    "Options (`--opt VALUE` or `--opt=VALUE`):\n",
    "  -a, --all            end every live call the filters below select (no ids)\n",
    "      --from NUM       with --all: only calls from NUM (e.g. +14155551234)\n",
    "      --to NUM         with --all: only calls to NUM\n",
    "      --direction D    with --all: only `inbound` or `outbound` calls\n",
    "      --timeout-ms MS  with --all: the sweep's deadline (default 60000)\n",
    "  -p, --parallel N     hangups in flight at once, 1 to 1024 (default 32)\n",
    "  -t, --tenant T       send X-Tenant-ID: T (overrides TRYVOX_TENANT_ID)\n",
    "  -j, --json           JSON output on stdout (see Output)\n",
    "      --no-progress    no progress bar, even on a terminal\n",
    "  -h, --help           print this help on stdout and exit 0\n",
    "  There is no option for the API key or the account, on purpose: a command line\n",
    "  is visible to every user of the machine (ps, /proc). They come from the\n",
    "  environment only; such an option is refused (64) without echoing its value.\n",
    "\n",
    "Environment:\n",
    "  TRYVOX_ACCOUNT_ID  the account (auth_id); required\n",
    "  TRYVOX_API_KEY     the API key; required, never printed\n",
    "  TRYVOX_BASE_URL    the API's URL (default https://api.tryvox.io)\n",
    "  TRYVOX_TENANT_ID   sent as X-Tenant-ID (optional; --tenant overrides it)\n",
    "\n",
    "Output:\n",
    "  stdout, one line per call, in input order: `ID: hung up` or\n",
    "    `ID: <description> [TRYVOX_<NAME>]`. With --all, one line of counts (ended,\n",
    "    already gone, failed, still live, listings) and the outcome.\n",
    "  --json: one object per line. Per call:\n",
    "    {\"id\":\"...\",\"status\":\"TRYVOX_NOT_FOUND\",\"code\":1,\"http\":null,\"message\":\"call not found\"}\n",
    "    \"http\" is always null (the bulk API reports statuses, not HTTP codes) and\n",
    "    \"message\" is the status's description (or why an invalid id was not sent).\n",
    "    Then a last line {\"summary\":{\"mode\":\"ids\",\"calls\":N,\"by_status\":{...},\n",
    "    \"exit\":N,\"elapsed_ms\":N,\"stats\":{...}}}. With --all, the only line is\n",
    "    {\"summary\":{\"mode\":\"all\",\"status\":...,\"code\":N,\"message\":...,\"ended\":N,\n",
    "    \"already_gone\":N,\"failed\":N,\"still_live\":N,\"listings\":N,\"exit\":N,...}}.\n",
    "  stderr: a progress bar (done/total, rate per second, ETA), only when stderr is\n",
    "    a terminal; then the summary: the calls by status name, and the client's\n",
    "    statistics (latency p50/p99/max, attempts, retries). With --json the summary\n",
    "    is the last JSON line on stdout instead.\n",
    "\n",
    "Exit status:\n",
    "  0     every call named was hung up by this run; --all: a final listing found\n",
    "        no live call left (or --help)\n",
    "  1, 2  no call failed, but some had nothing to end: the first such (in input\n",
    "        order) was 1 not found or 2 already ended. 0, 1 and 2 all mean that no\n",
    "        call named is live any more\n",
    "  3-63  some call could not be ended (--all: the sweep did not finish): the\n",
    "        tryvox status of the first failure in input order: 3 invalid id,\n",
    "        4 unauthorized, 5 forbidden, 6 rate limited, 7 server error, 8 timed out\n",
    "        (--all: the sweep's deadline passed), 9 network error, 10 TLS error,\n",
    "        11 protocol error, 12 internal error, 13 busy (see tryvox.h; a newer\n",
    "        library's status above 63 exits 63)\n",
    "  64    usage error (an unknown option, a bad option value, no id anywhere):\n",
    "        nothing was sent\n",
    "  78    could not start (TRYVOX_ACCOUNT_ID or TRYVOX_API_KEY unset,\n",
    "        TRYVOX_BASE_URL or TRYVOX_TENANT_ID invalid, the client refused, e.g. a\n",
    "        malformed account id, stdin unreadable, out of memory): nothing was sent\n",
    "  74    every call was settled (0, 1 or 2 above) but writing the output failed\n",
    "        (a closed pipe, a full disk): the hangups still all ran\n",
};

static void help(const char *prog) {
    printf(USAGE "       %s -h | --help\n", prog, prog, prog, prog);
    for (size_t i = 0; i < sizeof HELP / sizeof HELP[0]; i++) fputs(HELP[i], stdout);
}

/* A usage error: the short form on stderr. */
static int usage_error(const char *prog) {
    fprintf(stderr, USAGE "Run %s --help for the options, inputs and exit statuses.\n", prog, prog,
            prog, prog);
    return EXIT_USAGE;
}

/* ---- output helpers ---------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (2 to 4 bytes), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *p) {
    unsigned char c = p[0];
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0) lo = 0xA0;
        if (c == 0xED) hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0) lo = 0x90;
        if (c == 0xF4) hi = 0x8F;
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi) return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF) return 0;
    return n;
}

/* A JSON string: quotes, backslashes and control characters escaped; bytes that are not
 * UTF-8 become U+FFFD, so every line stays valid JSON whatever was on stdin. */
static void json_str(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    fputc('"', f);
    while (*p) {
        unsigned char c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', f);
            fputc(c, f);
            p++;
        } else if (c < 0x20 || c == 0x7F) {
            fprintf(f, "\\u%04x", (unsigned)c);
            p++;
        } else if (c < 0x80) {
            fputc(c, f);
            p++;
        } else {
            size_t n = utf8_len(p);
            if (n) {
                fwrite(p, 1, n, f);
                p += n;
            } else {
                fputs("\\ufffd", f);
                p++;
            }
        }
    }
    fputc('"', f);
}

/* An id as plain text: bytes outside visible ASCII as \xNN (no terminal escapes). */
static void plain_id(FILE *f, const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p > 0x20 && *p < 0x7F && *p != '\\')
            fputc(*p, f);
        else
            fprintf(f, "\\x%02x", (unsigned)*p);
    }
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the progress bar (stderr, only on a terminal) ------------------------------------ */

struct bar {
    int on;       /* stderr is a terminal and --no-progress was not given */
    int drawn;    /* a bar is on the screen now */
    int share;    /* stdout is a terminal too: clear the bar before printing there */
    double start; /* now_s() when the work started */
};

static void fmt_eta(char *buf, size_t size, double secs) {
    if (secs < 0 || secs > 359999) {
        snprintf(buf, size, "--");
    } else {
        unsigned long s = (unsigned long)(secs + 0.5);
        if (s >= 3600)
            snprintf(buf, size, "%luh%02lum", s / 3600, s / 60 % 60);
        else if (s >= 60)
            snprintf(buf, size, "%lum%02lus", s / 60, s % 60);
        else
            snprintf(buf, size, "%lus", s);
    }
}

/* Draws `[####....]  40% 400/1000  1234/s  ETA 1s  <extra>` over the previous bar. */
static void bar_draw(struct bar *b, uint64_t done, uint64_t total, const char *extra) {
    if (!b->on) return;
    enum { WIDTH = 24 };
    double elapsed = now_s() - b->start;
    double rate = elapsed > 0 ? (double)done / elapsed : 0;
    double frac = total ? (double)done / (double)total : 0.0;
    if (frac > 1) frac = 1;
    char bar[WIDTH + 1], eta[32];
    int filled = (int)(frac * WIDTH);
    for (int i = 0; i < WIDTH; i++) bar[i] = i < filled ? '#' : '.';
    bar[WIDTH] = '\0';
    fmt_eta(eta, sizeof eta,
            total && done >= total ? 0 : total && rate > 0 ? (double)(total - done) / rate : -1);
    fflush(stdout);
    fprintf(stderr, "\r[%s] %3d%% %llu/%llu  %.0f/s  ETA %s%s%s\033[K", bar, (int)(frac * 100),
            (unsigned long long)done, (unsigned long long)total, rate, eta, extra ? "  " : "",
            extra ? extra : "");
    fflush(stderr);
    b->drawn = 1;
}

/* Clears the bar's line, before other output goes to the terminal. */
static void bar_clear(struct bar *b) {
    if (!b->drawn || !b->share) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    b->drawn = 0;
}

/* Leaves the last bar on screen and moves to the next line. */
static void bar_done(struct bar *b) {
    if (!b->drawn) return;
    fputc('\n', stderr);
    b->drawn = 0;
}

/* ---- statistics ----------------------------------------------------------------------- */

static void stats_read(const tryvox_client *c, tryvox_stats *s) {
    memset(s, 0, sizeof *s);
    s->size = sizeof *s;
    tryvox_client_stats(c, s);
}

static uint64_t stats_retries(const tryvox_stats *s) {
    return s->retries_connection + s->retries_rate_limited + s->retries_server_error;
}

static void stats_plain(const tryvox_stats *s) {
    fprintf(stderr,
            "  client: latency p50 %.1f ms, p99 %.1f ms, max %.1f ms; %llu attempts, %llu retries"
            " (%llu connection, %llu rate limited, %llu server error)\n",
            (double)s->latency_p50_us / 1000, (double)s->latency_p99_us / 1000,
            (double)s->latency_max_us / 1000, (unsigned long long)s->attempts,
            (unsigned long long)stats_retries(s), (unsigned long long)s->retries_connection,
            (unsigned long long)s->retries_rate_limited,
            (unsigned long long)s->retries_server_error);
}

static void stats_json(const tryvox_stats *s) {
    printf("\"stats\":{\"latency_p50_us\":%llu,\"latency_p99_us\":%llu,\"latency_max_us\":%llu,"
           "\"attempts\":%llu,\"retries\":%llu,\"retries_connection\":%llu,"
           "\"retries_rate_limited\":%llu,\"retries_server_error\":%llu}",
           (unsigned long long)s->latency_p50_us, (unsigned long long)s->latency_p99_us,
           (unsigned long long)s->latency_max_us, (unsigned long long)s->attempts,
           (unsigned long long)stats_retries(s), (unsigned long long)s->retries_connection,
           (unsigned long long)s->retries_rate_limited,
           (unsigned long long)s->retries_server_error);
}

static int exit_for(int status) {
    return status > EXIT_MAX_STATUS ? EXIT_MAX_STATUS : status < 0 ? TRYVOX_INTERNAL_ERROR : status;
}

/* ---- input ---------------------------------------------------------------------------- */

/* The library's rule for a call id; checked here so one bad id cannot make
 * tryvox_hangup_many refuse its whole chunk. */
static int valid_id(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > MAX_ID_LEN || strcmp(s, ".") == 0 || strcmp(s, "..") == 0) return 0;
    for (const char *p = s; *p; p++) {
        char c = *p;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '_' || c == '.' || c == '~'))
            return 0;
    }
    return 1;
}

struct idlist {
    char **v;
    size_t n, cap;
    int owned; /* the strings were allocated here (read from stdin) */
};

static int idlist_push(struct idlist *l, char *id) {
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 1024;
        char **v = realloc(l->v, cap * sizeof *v);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = id;
    return 0;
}

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* One id per line; blank lines skipped, surrounding white space dropped. 0 or -1. */
static int read_ids(FILE *in, struct idlist *l) {
    char *line = NULL;
    size_t size = 0;
    ssize_t len;
    l->owned = 1;
    errno = 0;
    while ((len = getline(&line, &size, in)) != -1) {
        /* A NUL inside the line: make it a character the id rule refuses. */
        for (ssize_t i = 0; i < len; i++)
            if (line[i] == '\0') line[i] = '?';
        char *s = line, *e = line + len;
        while (s < e && is_space(*s)) s++;
        while (e > s && is_space(e[-1])) e--;
        if (s == e) continue;
        *e = '\0';
        char *id = strdup(s);
        if (!id || idlist_push(l, id) != 0) {
            free(id);
            free(line);
            return -1;
        }
    }
    free(line);
    return ferror(in) ? -1 : 0;
}

/* ---- options -------------------------------------------------------------------------- */

struct opts {
    int all, json, no_progress, from_stdin;
    unsigned parallel;
    unsigned long timeout_ms;
    const char *from, *to, *direction, *tenant;
};

/* `--name=value` or `--name value`: the value, or NULL (a usage error) when there is none. */
static const char *opt_value(int argc, char **argv, int *i, const char *name) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (a[n] == '=') return a + n + 1;
    if (*i + 1 < argc) return argv[++*i];
    return NULL;
}

/* Does argv[i] name option `name` (exactly, or as `name=...`)? */
static int is_opt(const char *arg, const char *name) {
    size_t n = strlen(name);
    return strncmp(arg, name, n) == 0 && (arg[n] == '\0' || arg[n] == '=');
}

static int parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out) {
    if (!s || *s < '0' || *s > '9') return -1;
    char *end;
    errno = 0;
    unsigned long v = strtoul(s, &end, 10);
    if (errno || *end || v < lo || v > hi) return -1;
    *out = v;
    return 0;
}

/* An E.164-ish filter: 1 to 64 visible ASCII characters (the library's own rule). */
static int valid_filter(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64) return 0;
    for (; *s; s++)
        if (*s < 0x21 || *s > 0x7E) return 0;
    return 1;
}

/* An option that would carry a secret (or the account) on the command line. */
static int secret_option(const char *arg) {
    static const char *const words[] = {"key", "token", "secret", "pass", "account", "auth", "bearer"};
    size_t n = strcspn(arg, "=");
    for (size_t w = 0; w < sizeof words / sizeof words[0]; w++) {
        size_t k = strlen(words[w]);
        for (size_t i = 0; i + k <= n; i++)
            if (strncmp(arg + i, words[w], k) == 0) return 1;
    }
    return 0;
}

/* How much of an unknown option to echo: `-x` of `-xVALUE`, `--name` of `--name=VALUE`
 * (the value might be a key). */
static int shown(const char *arg) {
    return arg[1] == '-' ? (int)strcspn(arg, "=") : 2;
}

/* Parses argv into `o` and the ids (pointers into argv). Returns -1 to go on, else the
 * exit status (0 for --help, 64 for a usage error). */
static int parse_args(int argc, char **argv, const char *prog, struct opts *o, struct idlist *ids) {
    int dashdash = 0, dash = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (dashdash || a[0] != '-') {
            if (idlist_push(ids, argv[i]) != 0) {
                fprintf(stderr, "%s: out of memory\n", prog);
                return EXIT_CANNOT_START;
            }
            continue;
        }
        if (strcmp(a, "-") == 0) {
            dash++;
        } else if (strcmp(a, "--") == 0) {
            dashdash = 1;
        } else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            help(prog);
            return 0;
        } else if (strcmp(a, "-a") == 0 || strcmp(a, "--all") == 0) {
            o->all = 1;
        } else if (strcmp(a, "-j") == 0 || strcmp(a, "--json") == 0) {
            o->json = 1;
        } else if (strcmp(a, "--no-progress") == 0) {
            o->no_progress = 1;
        } else if (strcmp(a, "-p") == 0 || is_opt(a, "--parallel")) {
            const char *v = opt_value(argc, argv, &i, a[1] == 'p' ? "-p" : "--parallel");
            unsigned long n;
            if (parse_uint(v, 1, MAX_PARALLEL, &n) != 0) {
                fprintf(stderr, "%s: --parallel takes a number from 1 to %d\n", prog, MAX_PARALLEL);
                return usage_error(prog);
            }
            o->parallel = (unsigned)n;
        } else if (is_opt(a, "--timeout-ms")) {
            const char *v = opt_value(argc, argv, &i, "--timeout-ms");
            if (parse_uint(v, 1, UINT32_MAX, &o->timeout_ms) != 0) {
                fprintf(stderr, "%s: --timeout-ms takes a number of milliseconds from 1\n", prog);
                return usage_error(prog);
            }
        } else if (strcmp(a, "-t") == 0 || is_opt(a, "--tenant")) {
            o->tenant = opt_value(argc, argv, &i, a[1] == 't' ? "-t" : "--tenant");
            if (!o->tenant) {
                fprintf(stderr, "%s: --tenant takes a tenant id\n", prog);
                return usage_error(prog);
            }
        } else if (is_opt(a, "--from") || is_opt(a, "--to")) {
            int from = a[2] == 'f';
            const char *v = opt_value(argc, argv, &i, from ? "--from" : "--to");
            if (!v || !valid_filter(v)) {
                fprintf(stderr, "%s: %s takes a number (1 to 64 visible ASCII characters)\n", prog,
                        from ? "--from" : "--to");
                return usage_error(prog);
            }
            *(from ? &o->from : &o->to) = v;
        } else if (is_opt(a, "--direction")) {
            o->direction = opt_value(argc, argv, &i, "--direction");
            if (!o->direction ||
                (strcmp(o->direction, "inbound") != 0 && strcmp(o->direction, "outbound") != 0)) {
                fprintf(stderr, "%s: --direction takes `inbound` or `outbound`\n", prog);
                return usage_error(prog);
            }
        } else if (secret_option(a)) {
            /* Never echo it: `--api-key=...` would print the key. */
            fprintf(stderr,
                    "%s: unknown option %.*s: the API key and the account are read from "
                    "TRYVOX_API_KEY and TRYVOX_ACCOUNT_ID only (a command line is visible to every "
                    "user through ps)\n",
                    prog, shown(a), a);
            return usage_error(prog);
        } else {
            fprintf(stderr, "%s: unknown option %.*s (put `--` before an id that starts with '-')\n",
                    prog, shown(a), a);
            return usage_error(prog);
        }
    }
    if (dash && (dash > 1 || ids->n > 0)) {
        fprintf(stderr, "%s: `-` (read the ids from stdin) must be the only id\n", prog);
        return usage_error(prog);
    }
    o->from_stdin = dash;
    if (o->all && (ids->n > 0 || dash)) {
        fprintf(stderr, "%s: --all takes no ids (it ends every live call the filters select)\n", prog);
        return usage_error(prog);
    }
    if (!o->all && (o->from || o->to || o->direction || o->timeout_ms)) {
        fprintf(stderr, "%s: --from, --to, --direction and --timeout-ms go with --all\n", prog);
        return usage_error(prog);
    }
    if (!o->all && ids->n == 0 && !dash && isatty(STDIN_FILENO)) {
        fprintf(stderr, "%s: no call id (give ids as arguments, one per line on stdin, or --all)\n",
                prog);
        return usage_error(prog);
    }
    return -1;
}

/* ---- the two modes -------------------------------------------------------------------- */

/* Hangs up `ids` in chunks and prints each outcome; returns the exit status. */
static int run_ids(tryvox_client *c, const struct opts *o, struct idlist *ids, struct bar *b) {
    size_t n = ids->n;
    size_t chunk = CHUNK > 4 * (size_t)o->parallel ? CHUNK : 4 * (size_t)o->parallel;
    int *status = malloc(n * sizeof *status);
    int *sub = malloc(chunk * sizeof *sub);
    const char **batch = malloc(chunk * sizeof *batch);
    size_t *where = malloc(chunk * sizeof *where);
    if (!status || !sub || !batch || !where) {
        free(status);
        free(sub);
        free(batch);
        free(where);
        fprintf(stderr, "tryvox-hangup: out of memory\n");
        return EXIT_CANNOT_START;
    }
    uint64_t counts[NSTATUS] = {0};
    bar_draw(b, 0, n, NULL);
    for (size_t start = 0; start < n; start += chunk) {
        size_t end = start + chunk < n ? start + chunk : n, k = 0;
        for (size_t i = start; i < end; i++) {
            if (valid_id(ids->v[i])) {
                batch[k] = ids->v[i];
                where[k++] = i;
            } else {
                status[i] = TRYVOX_INVALID_ARGUMENT;
            }
        }
        if (k > 0) {
            int rc = tryvox_hangup_many(c, batch, k, sub, o->parallel);
            if (rc == TRYVOX_INVALID_ARGUMENT) {
                /* The library refused an id this program let through: one by one. */
                for (size_t j = 0; j < k; j++) sub[j] = tryvox_hangup(c, batch[j]);
            } else if (rc != TRYVOX_OK) {
                for (size_t j = 0; j < k; j++) sub[j] = rc; /* nothing sent (BUSY) */
            }
            for (size_t j = 0; j < k; j++) status[where[j]] = sub[j];
        }
        bar_clear(b);
        for (size_t i = start; i < end; i++) {
            int s = status[i];
            char nb[32];
            const char *name = status_name(s, nb);
            const char *msg = valid_id(ids->v[i])
                                      ? tryvox_status_str(s)
                                      : "not a valid call id (1 to 128 characters from A-Z a-z "
                                        "0-9 - _ . ~); not sent";
            counts[s >= 0 && s < NSTATUS ? s : NSTATUS - 1]++;
            if (o->json) {
                fputs("{\"id\":", stdout);
                json_str(stdout, ids->v[i]);
                printf(",\"status\":\"%s\",\"code\":%d,\"http\":null,\"message\":", name, s);
                json_str(stdout, msg);
                fputs("}\n", stdout);
            } else {
                plain_id(stdout, ids->v[i]);
                if (s == TRYVOX_OK)
                    fputs(": hung up\n", stdout);
                else
                    printf(": %s [%s]\n", msg, name);
            }
        }
        bar_draw(b, end, n, NULL);
    }
    bar_done(b);
    double elapsed = now_s() - b->start;

    /* Exit: the first real failure, else the first "nothing to end", else 0. */
    int first_gone = TRYVOX_OK, first_failure = TRYVOX_OK;
    for (size_t i = 0; i < n; i++) {
        int s = status[i];
        if ((s == TRYVOX_NOT_FOUND || s == TRYVOX_ALREADY_ENDED) && first_gone == TRYVOX_OK)
            first_gone = s;
        else if (s != TRYVOX_OK && s != TRYVOX_NOT_FOUND && s != TRYVOX_ALREADY_ENDED &&
                 first_failure == TRYVOX_OK)
            first_failure = s;
    }
    int code = exit_for(first_failure != TRYVOX_OK ? first_failure : first_gone);

    tryvox_stats st;
    stats_read(c, &st);
    if (o->json) {
        printf("{\"summary\":{\"mode\":\"ids\",\"calls\":%zu,\"by_status\":{", n);
        int sep = 0;
        for (int s = 0; s < NSTATUS; s++) {
            if (!counts[s]) continue;
            char nb[32];
            printf("%s\"%s\":%llu", sep++ ? "," : "",
                   s == NSTATUS - 1 ? "TRYVOX_STATUS_OTHER" : status_name(s, nb),
                   (unsigned long long)counts[s]);
        }
        printf("},\"exit\":%d,\"elapsed_ms\":%.0f,", code, elapsed * 1000);
        stats_json(&st);
        fputs("}}\n", stdout);
    } else {
        fflush(stdout);
        fprintf(stderr, "summary: %zu call(s) in %.2f s, exit %d\n", n, elapsed, code);
        for (int s = 0; s < NSTATUS; s++) {
            if (!counts[s]) continue;
            char nb[32];
            fprintf(stderr, "  %-24s %8llu  %s\n",
                    s == NSTATUS - 1 ? "TRYVOX_STATUS_OTHER" : status_name(s, nb),
                    (unsigned long long)counts[s], s == TRYVOX_OK ? "hung up" : tryvox_status_str(s));
        }
        stats_plain(&st);
    }
    free(status);
    free(sub);
    free(batch);
    free(where);
    return code;
}

struct sweep_progress {
    struct bar *bar;
};

static void on_sweep(void *user_data, const struct tryvox_sweep *s) {
    struct sweep_progress *p = user_data;
    char extra[160];
    uint64_t done = s->ended + s->already_gone + s->failed;
    snprintf(extra, sizeof extra, "ended %llu, gone %llu, failed %llu, listings %llu",
             (unsigned long long)s->ended, (unsigned long long)s->already_gone,
             (unsigned long long)s->failed, (unsigned long long)s->listings);
    bar_draw(p->bar, done, done + s->still_live, extra);
}

/* Ends every live call the filters select; returns the exit status. */
static int run_all(tryvox_client *c, const struct opts *o, struct bar *b) {
    struct sweep_progress p = {b};
    tryvox_sweep sw;
    memset(&sw, 0, sizeof sw);
    sw.size = sizeof sw;
    sw.from = o->from;
    sw.to = o->to;
    sw.direction = o->direction;
    sw.max_parallel = o->parallel;
    sw.timeout_ms = (uint32_t)o->timeout_ms;
    sw.progress = on_sweep;
    sw.user_data = &p;
    bar_draw(b, 0, 0, "listing the live calls");
    int rc = tryvox_hangup_all(c, &sw);
    char message[1024];
    snprintf(message, sizeof message, "%s", tryvox_last_error());
    bar_done(b);
    double elapsed = now_s() - b->start;
    /* 1 or 2 here would be a listing answered 404, not calls that are gone. */
    int code = rc == TRYVOX_NOT_FOUND || rc == TRYVOX_ALREADY_ENDED ? TRYVOX_PROTOCOL_ERROR
                                                                     : exit_for(rc);
    char nb[32];
    const char *name = status_name(rc, nb);
    tryvox_stats st;
    stats_read(c, &st);
    if (o->json) {
        printf("{\"summary\":{\"mode\":\"all\",\"status\":\"%s\",\"code\":%d,\"message\":", name, rc);
        json_str(stdout, rc == TRYVOX_OK ? "" : message);
        printf(",\"ended\":%llu,\"already_gone\":%llu,\"failed\":%llu,\"still_live\":%llu,"
               "\"listings\":%llu,\"exit\":%d,\"elapsed_ms\":%.0f,",
               (unsigned long long)sw.ended, (unsigned long long)sw.already_gone,
               (unsigned long long)sw.failed, (unsigned long long)sw.still_live,
               (unsigned long long)sw.listings, code, elapsed * 1000);
        stats_json(&st);
        fputs("}}\n", stdout);
    } else {
        printf("ended %llu, already gone %llu, failed %llu, still live %llu, listings %llu: %s",
               (unsigned long long)sw.ended, (unsigned long long)sw.already_gone,
               (unsigned long long)sw.failed, (unsigned long long)sw.still_live,
               (unsigned long long)sw.listings, rc == TRYVOX_OK ? "no live call left" : name);
        if (rc != TRYVOX_OK) printf(": %s", message);
        fputc('\n', stdout);
        fflush(stdout);
        fprintf(stderr, "summary: --all in %.2f s, exit %d\n", elapsed, code);
        stats_plain(&st);
    }
    return code;
}

int main(int argc, char **argv) {
    const char *prog = argc > 0 && argv[0] ? argv[0] : "tryvox-hangup";
    /* A closed stdin, stdout or stderr would be taken by the library's first socket, and
     * our output would go into an HTTP connection: give each closed one /dev/null. */
    for (int fd = 0; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) == -1 && errno == EBADF) {
            int n = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY);
            if (n >= 0 && n != fd) close(n); /* cannot happen: the lowest free fd is fd */
        }
    /* A reader that goes away (| head) must not stop the hangups half way: writes fail
     * with EPIPE instead, every call is still ended, and the exit status says so. */
    signal(SIGPIPE, SIG_IGN);
    struct opts o = {0};
    o.parallel = DEFAULT_PARALLEL;
    struct idlist ids = {0};
    /* Options first, all of them, before anything is sent. */
    int code = parse_args(argc, argv, prog, &o, &ids);
    if (code >= 0) {
        free(ids.v);
        return code;
    }

    const char *account = getenv("TRYVOX_ACCOUNT_ID");
    const char *key = getenv("TRYVOX_API_KEY");
    if (!account || !*account || !key || !*key) {
        fprintf(stderr, "%s: set TRYVOX_ACCOUNT_ID and TRYVOX_API_KEY in the environment\n", prog);
        free(ids.v);
        return EXIT_CANNOT_START;
    }
    tryvox_options *opt = tryvox_options_new();
    const char *base = getenv("TRYVOX_BASE_URL");
    const char *tenant = o.tenant ? o.tenant : getenv("TRYVOX_TENANT_ID");
    const char *bad = NULL;
    if (!opt)
        bad = "out of memory";
    else if (base && tryvox_options_set_base_url(opt, base) != TRYVOX_OK)
        bad = "TRYVOX_BASE_URL";
    else if (tenant && tryvox_options_set_tenant_id(opt, tenant) != TRYVOX_OK)
        bad = o.tenant ? "--tenant" : "TRYVOX_TENANT_ID";
    else if (tryvox_options_set_user_agent(opt, "tryvox-hangup-cli") != TRYVOX_OK)
        bad = "the user agent";
    if (bad) {
        fprintf(stderr, "%s: %s: %s\n", prog, bad, opt ? tryvox_last_error() : "");
        tryvox_options_free(opt);
        free(ids.v);
        return strcmp(bad, "--tenant") == 0 ? usage_error(prog) : EXIT_CANNOT_START;
    }
    tryvox_client *c = tryvox_client_new_with_options(account, key, opt);
    tryvox_options_free(opt);
    if (!c) {
        fprintf(stderr, "%s: could not create the client: %s\n", prog, tryvox_last_error());
        free(ids.v);
        return EXIT_CANNOT_START;
    }

    if (!o.all && ids.n == 0) {
        if (read_ids(stdin, &ids) != 0) {
            fprintf(stderr, "%s: could not read the ids on stdin: %s\n", prog,
                    errno ? strerror(errno) : "read error");
            code = EXIT_CANNOT_START;
        } else if (ids.n == 0) {
            fprintf(stderr, "%s: no call id on stdin\n", prog);
            code = usage_error(prog);
        }
    }
    if (code < 0) {
        struct bar b = {0, 0, 0, now_s()};
        b.on = !o.no_progress && isatty(STDERR_FILENO);
        b.share = isatty(STDOUT_FILENO);
        code = o.all ? run_all(c, &o, &b) : run_ids(c, &o, &ids, &b);
    }
    tryvox_client_free(c);
    if (ids.owned)
        for (size_t i = 0; i < ids.n; i++) free(ids.v[i]);
    free(ids.v);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "%s: writing the output failed\n", prog);
        if (code >= 0 && code <= 2) code = EXIT_OUTPUT; /* a hangup failure says more */
    }
    return code;
}
