/*
 * tryvox-hangup: hang up calls from the command line (the incident tool).
 *
 *   TRYVOX_ACCOUNT_ID=AC123456 TRYVOX_API_KEY=tvx_sk_live_... tryvox-hangup CALL_UUID...
 *   ... tryvox-hangup --parallel 64 < ids.txt
 *   ... tryvox-hangup --all --from +14155551234 --json
 *
 * Ids come as arguments or one per line on stdin and go through tryvox_hangup_each;
 * --all runs tryvox_hangup_all. Both report each call as it settles (on_call: the audit
 * log) and their counts every 50 ms (progress: the bar, redrawn in place at most 20 times
 * a second); the first Ctrl-C calls tryvox_sweep_stop from the signal handler. The key and
 * the account come from the environment only: there is no option for them (a command
 * line is visible to every user through ps). Run it with --help for the options, the
 * output formats and the exit statuses.
 */
#ifndef _DEFAULT_SOURCE
#define _DEFAULT_SOURCE /* SIGWINCH, TIOCGWINSZ, with POSIX 2008 */
#endif
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#include "tryvox.h"

#define EXIT_USAGE 64        /* sysexits EX_USAGE */
#define EXIT_CANNOT_START 78 /* sysexits EX_CONFIG */
#define EXIT_OUTPUT 74       /* sysexits EX_IOERR: every call settled, the output failed */
#define EXIT_DECLINED 65     /* the operator answered no: nothing was sent */
#define EXIT_INTERRUPTED 130 /* Ctrl-C: 128 + SIGINT, as a shell reports it */
#define EXIT_MAX_STATUS 63   /* a status above this exits 63 (64 and up are the CLI's own) */
#define DEFAULT_PARALLEL 32
#define MAX_PARALLEL 1024
#define MAX_ID_LEN 128
#define NSTATUS 64 /* statuses counted one by one; above that they share the last slot */

#define USAGE                                                                                \
    "usage: %s [options] [--] CALL_UUID...\n"                                                \
    "       %s [options] [-] < ids.txt\n"                                                    \
    "       %s --all [--from NUM] [--to NUM] [--direction D] [--timeout-ms MS]\n"          \
    "             [--dry-run] [--yes] [options]\n"

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
    "      --dry-run        with --all: list the live calls it would end; end none\n",
    "  -y, --yes            with --all: do not ask for confirmation. On a terminal\n",
    "                       (stdin and stderr), --all first lists the live calls and\n",
    "                       asks, showing the account, tenant, filters and how many it\n",
    "                       found; without a terminal --all needs --yes (else exit 64,\n",
    "                       nothing sent)\n",
    "  -p, --parallel N     hangups in flight at once, 1 to 1024 (default 32); halved\n",
    "                       on a 429 (Too Many Requests), raised by one again after as\n",
    "                       many answers (additive increase, multiplicative decrease)\n",
    "      --max-rate N     start at most N hangups a second (1 to 1000000; a retry\n",
    "                       is not a new hangup: --parallel bounds those)\n",
    "      --audit-log FILE append one JSON line per call to FILE (created 0600) as\n",
    "                       each settles: {\"ts\":UTC time,\"account\",\"tenant\",\"mode\",\n",
    "                       \"id\",\"outcome\":\"ended\"|\"already_gone\"|\"failed\"|\"not_sent\",\n",
    "                       \"status\",\"code\",\"http\",\"message\"}; each line is written\n",
    "                       whole with one write(2), so a crash leaves a true record\n",
    "                       (not with --dry-run, which sends nothing to record)\n",
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
    "  stdout, one line per call: `ID: hung up` or `ID: <description> [TRYVOX_<NAME>]`\n",
    "    (ids: in input order, each as soon as every id before it is in; --all: each\n",
    "    call ended, already gone or failed, as it settles), then with --all one line\n",
    "    of counts (ended, already gone, failed, still live, listings) and the\n",
    "    outcome. --dry-run: `ID: live` per call found, then the count.\n",
    "  --json: one object per line. Per call:\n",
    "    {\"id\":\"...\",\"status\":\"TRYVOX_OK\",\"code\":0,\"http\":204,\"message\":\"hung up\"}\n",
    "    \"http\" is the last HTTP status seen, null when none came (not sent, no\n",
    "    answer); \"message\" is the status's description. --dry-run: {\"id\":\"...\",\n",
    "    \"live\":true} per call. Then a last line {\"summary\":{\"mode\":\"ids\"|\"all\"|\n",
    "    \"dry-run\",...,\"rate_limited\":N,\"backoffs\":N,\"exit\":N,\"elapsed_ms\":N,\n",
    "    \"stats\":{...}}} (--all adds \"status\",\"code\",\"message\",\"ended\",\n",
    "    \"already_gone\",\"failed\",\"still_live\",\"listings\",\"found\").\n",
    "  stderr: a progress bar on one line, redrawn in place (done/total, percent, the\n",
    "    rate and ETA over the last 3 s), fitted to the terminal's width, only when\n",
    "    stderr is a terminal; cleared before the summary: the calls by status, 429s\n",
    "    and back-offs, and the client's statistics (latency p50/p99/max, attempts,\n",
    "    retries). With --json the summary is the last JSON line on stdout instead.\n",
    "\n",
    "Ctrl-C: the first stops starting hangups; those in flight finish (their retries\n",
    "  included) and are recorded, then the record and the summary are printed and\n",
    "  the exit status is 130. A second Ctrl-C exits at once (130; what was sent may\n",
    "  then be unrecorded). While --all lists and asks, before any hangup, Ctrl-C\n",
    "  ends the program at once: nothing was sent.\n",
    "\n",
    "Exit status:\n",
    "  0     every call named was hung up by this run; --all: a final listing found\n",
    "        no live call left; --dry-run: the listing completed (or --help)\n",
    "  1, 2  no call failed, but some had nothing to end: the first such (in input\n",
    "        order) was 1 not found or 2 already ended. 0, 1 and 2 all mean that no\n",
    "        call named is live any more\n",
    "  3-63  some call could not be ended (--all: the sweep did not finish): the\n",
    "        tryvox status of the first failure in input order: 3 invalid id,\n",
    "        4 unauthorized, 5 forbidden, 6 rate limited, 7 server error, 8 timed out\n",
    "        (--all: the sweep's deadline passed), 9 network error, 10 TLS error,\n",
    "        11 protocol error, 12 internal error, 13 busy (see tryvox.h; a newer\n",
    "        library's status above 63 exits 63)\n",
    "  64    usage error (an unknown option, a bad option value, no id anywhere,\n",
    "        --all without a terminal and without --yes): nothing was sent\n",
    "  65    --all: the confirmation was answered no: nothing was sent\n",
    "  78    could not start (TRYVOX_ACCOUNT_ID or TRYVOX_API_KEY unset,\n",
    "        TRYVOX_BASE_URL or TRYVOX_TENANT_ID invalid, the client refused, e.g. a\n",
    "        malformed account id, stdin unreadable, the audit log not writable, out\n",
    "        of memory): nothing was sent\n",
    "  74    every call was settled (0, 1 or 2 above) but writing the output failed\n",
    "        (a closed pipe, a full disk): the hangups still all ran\n",
    "  130   interrupted by Ctrl-C (see above)\n",
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

#define BAR_EVERY 0.05  /* seconds between frames at most (20 a second) */
#define RATE_WINDOW 3.0 /* seconds of history for the rate and the ETA */
#define SAMPLES 128     /* frames kept for that window (60 at 20 a second) */

/* Set by SIGWINCH: the terminal's width is read again before the next frame. */
static volatile sig_atomic_t winch = 1;

static void on_winch(int sig) {
    (void)sig;
    winch = 1;
}

struct bar {
    int on;           /* stderr is a terminal and --no-progress was not given */
    int drawn;        /* a bar is on the screen now */
    int share;        /* stdout is a terminal too: clear the bar before printing there */
    int width;        /* the terminal's columns */
    double start;     /* now_s() when the work started */
    double last;      /* when the last frame was drawn */
    uint64_t done;    /* what the last frame showed: a frame never shows less */
    uint64_t total;
    double t[SAMPLES]; /* (time, done) of recent frames, a ring */
    uint64_t d[SAMPLES];
    int head, count;
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

/* Completions a second over the last RATE_WINDOW seconds (since the start before that);
 * -1 before there is anything to measure. */
static double bar_rate(struct bar *b, double now, uint64_t done) {
    b->head = (b->head + 1) % SAMPLES;
    b->t[b->head] = now;
    b->d[b->head] = done;
    if (b->count < SAMPLES) b->count++;
    double t0 = b->start;
    uint64_t d0 = 0;
    for (int k = 1; k < b->count; k++) {
        int i = (b->head - k + SAMPLES) % SAMPLES;
        if (now - b->t[i] > RATE_WINDOW) break;
        t0 = b->t[i];
        d0 = b->d[i];
    }
    if (now - t0 < 0.2) return -1;
    return (double)(done - d0) / (now - t0);
}

/* Draws one frame in place: `[#####.....]  27% 2700/10000  512/s  ETA 14s  state`, cut
 * to the terminal's width (the graph first, then the state, then rate and ETA) so that
 * it never wraps. `done` and `total` never go back: a frame shows at least what the
 * last one did, and a total that grows (a listing found more) grows the bar's total,
 * not its done count. At most one frame per BAR_EVERY unless `force`. */
static void bar_update(struct bar *b, uint64_t done, uint64_t total, const char *state, int force) {
    if (!b->on) return;
    double now = now_s();
    if (!force && b->drawn && now - b->last < BAR_EVERY) return;
    if (winch) {
        winch = 0;
        struct winsize ws;
        b->width = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0 ? ws.ws_col : 80;
    }
    if (done < b->done) done = b->done;
    if (total < b->total) total = b->total;
    if (total < done) total = done;
    b->done = done;
    b->total = total;
    b->last = now;
    double rate = bar_rate(b, now, done);
    int pct = total ? (int)(100.0 * (double)done / (double)total) : 0;
    char eta[32], rate_s[400], count[64], line[512];
    fmt_eta(eta, sizeof eta, done >= total && total ? 0 : rate > 0 ? (double)(total - done) / rate : -1);
    if (rate >= 0)
        snprintf(rate_s, sizeof rate_s, "  %.0f/s  ETA %s", rate, eta);
    else
        snprintf(rate_s, sizeof rate_s, "  --/s  ETA %s", eta);
    snprintf(count, sizeof count, " %3d%% %llu/%llu", pct, (unsigned long long)done,
             (unsigned long long)total);
    int room = b->width - 1; /* the last column would wrap on some terminals */
    if (room > (int)sizeof line - 1) room = (int)sizeof line - 1;
    const char *st = state ? state : "";
    int text = (int)(strlen(count) + strlen(rate_s) + (state ? 2 + strlen(st) : 0));
    if (text > room) { /* narrow: drop the state, then the rate and ETA */
        st = "";
        state = NULL;
        text = (int)(strlen(count) + strlen(rate_s));
        if (text > room) {
            rate_s[0] = '\0';
            text = (int)strlen(count);
        }
        if (text > room) { /* the percentage alone, or nothing: never a cut number */
            snprintf(count, sizeof count, " %3d%%", pct);
            text = (int)strlen(count);
            if (text > room) return;
        }
    }
    int graph = room - text - 2;
    if (graph > 40) graph = 40;
    int n = 0;
    if (graph >= 10) {
        int filled = total ? (int)((double)graph * (double)done / (double)total) : 0;
        line[n++] = '[';
        for (int k = 0; k < graph; k++) line[n++] = k < filled ? '#' : '.';
        line[n++] = ']';
    }
    snprintf(line + n, sizeof line - (size_t)n, "%s%s%s%s", count, rate_s, state ? "  " : "", st);
    if ((int)strlen(line) > room && room >= 0) line[room] = '\0';
    fflush(stdout);
    fprintf(stderr, "\r%s\033[K", line);
    fflush(stderr);
    b->drawn = 1;
}

/* Clears the bar's line before other output goes to the same terminal. */
static void bar_clear(struct bar *b) {
    if (!b->drawn) return;
    fputs("\r\033[K", stderr);
    fflush(stderr);
    b->drawn = 0;
}

/* ---- Ctrl-C ----------------------------------------------------------------------------- */

/* The running operation's struct (tryvox_sweep_stop is async-signal-safe), and how many
 * Ctrl-C there were. */
static tryvox_sweep *volatile running_sweep;
static volatile sig_atomic_t interrupted;

static void on_sigint(int sig) {
    (void)sig;
    if (interrupted) _exit(EXIT_INTERRUPTED); /* the second: at once */
    interrupted = 1;
    tryvox_sweep *sw = running_sweep;
    if (sw) tryvox_sweep_stop(sw);
}

static void catch_signal(int sig, void (*handler)(int)) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sa.sa_handler = handler;
    sigaction(sig, &sa, NULL);
}

/* From here on, Ctrl-C stops starting hangups (before: it ends the program at once,
 * nothing having been sent). */
static void catch_ctrl_c(void) {
    catch_signal(SIGINT, on_sigint);
}

/* ---- the audit log ---------------------------------------------------------------------- */

struct audit {
    int fd; /* -1: none */
    const char *account, *tenant, *mode;
    int failed; /* a write failed (reported once, at the end) */
};

static const char *outcome_of(int status, const char *message) {
    if (status == TRYVOX_OK) return "ended";
    if (status == TRYVOX_NOT_FOUND || status == TRYVOX_ALREADY_ENDED) return "already_gone";
    if (strncmp(message, "not sent", 8) == 0) return "not_sent"; /* tryvox_sweep.on_call */
    return "failed";
}

/* One JSON line, written whole by one write(2) on an O_APPEND descriptor: what is in the
 * file is never half a line, and a crash (kill -9) leaves every line written true. */
static void audit_write(struct audit *a, const char *id, int status, int http, const char *message) {
    if (a->fd < 0) return;
    struct timespec ts;
    struct tm tm;
    char when[40], nb[32];
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t k = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(when + k, sizeof when - k, ".%03ldZ", ts.tv_nsec / 1000000);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (!m) {
        a->failed = 1;
        return;
    }
    fprintf(m, "{\"ts\":\"%s\",\"account\":", when);
    json_str(m, a->account);
    fputs(",\"tenant\":", m);
    if (a->tenant)
        json_str(m, a->tenant);
    else
        fputs("null", m);
    fprintf(m, ",\"mode\":\"%s\",\"id\":", a->mode);
    json_str(m, id);
    fprintf(m, ",\"outcome\":\"%s\",\"status\":\"%s\",\"code\":%d,\"http\":", outcome_of(status, message),
            status_name(status, nb), status);
    if (http > 0)
        fprintf(m, "%d", http);
    else
        fputs("null", m);
    fputs(",\"message\":", m);
    json_str(m, status == TRYVOX_OK ? "hung up" : message);
    fputs("}\n", m);
    if (fclose(m) != 0 || !buf) {
        free(buf);
        a->failed = 1;
        return;
    }
    for (size_t off = 0; off < len;) {
        ssize_t w = write(a->fd, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            a->failed = 1;
            break;
        }
        off += (size_t)w;
    }
    free(buf);
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
            "  client: latency p50 %.1f ms, p99 %.1f ms, max %.1f ms\n"
            "  attempts %llu, retries %llu (%llu connection, %llu rate limited, %llu server error)\n",
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
    int all, json, no_progress, from_stdin, dry_run, yes;
    unsigned parallel;
    unsigned long timeout_ms, max_rate;
    const char *from, *to, *direction, *tenant, *audit_log;
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
        } else if (strcmp(a, "--dry-run") == 0) {
            o->dry_run = 1;
        } else if (strcmp(a, "-y") == 0 || strcmp(a, "--yes") == 0) {
            o->yes = 1;
        } else if (is_opt(a, "--max-rate")) {
            const char *v = opt_value(argc, argv, &i, "--max-rate");
            if (parse_uint(v, 1, 1000000, &o->max_rate) != 0) {
                fprintf(stderr, "%s: --max-rate takes a number of hangups a second from 1 to 1000000\n",
                        prog);
                return usage_error(prog);
            }
        } else if (is_opt(a, "--audit-log")) {
            o->audit_log = opt_value(argc, argv, &i, "--audit-log");
            if (!o->audit_log || !*o->audit_log) {
                fprintf(stderr, "%s: --audit-log takes a file name\n", prog);
                return usage_error(prog);
            }
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
    if (o->dry_run && o->audit_log) {
        fprintf(stderr, "%s: --audit-log records hangups; --dry-run sends none\n", prog);
        return usage_error(prog);
    }
    if (!o->all && (o->from || o->to || o->direction || o->timeout_ms || o->dry_run)) {
        fprintf(stderr, "%s: --from, --to, --direction, --timeout-ms and --dry-run go with --all\n",
                prog);
        return usage_error(prog);
    }
    /* Ending every call of an account is confirmed by a person at a terminal, or
     * said up front with --yes (a script, a pipe, cron): never assumed. */
    if (o->all && !o->dry_run && !o->yes && !(isatty(STDIN_FILENO) && isatty(STDERR_FILENO))) {
        fprintf(stderr,
                "%s: --all ends every live call it finds and asks first on a terminal; without "
                "one, say --yes (or look first with --dry-run). Nothing was sent.\n",
                prog);
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

/* What the callbacks of a run share. */
struct run {
    const struct opts *o;
    struct bar *bar;
    struct audit *audit;
    int all;          /* --all: each call is printed as it settles */
    int last;         /* the last frame: drawn whatever the pace (then cleared) */
    uint64_t invalid; /* ids mode: invalid ids (done before anything is sent) */
    uint64_t counts[NSTATUS];
    /* ids mode: outcomes by input index, printed in input order as soon as every id
     * before them is in (so a reader sees the record grow, and one that leaves early
     * is noticed). */
    struct idlist *ids;
    struct slot *slots; /* the valid ids sorted by (id, index): outcome -> index */
    size_t nslots;
    int *status, *http;
    unsigned char *filled;
    size_t next; /* the first index not printed yet */
};

struct slot {
    const char *id;
    size_t index;
};

static int slot_cmp(const void *a, const void *b) {
    const struct slot *x = a, *y = b;
    int c = strcmp(x->id, y->id);
    return c ? c : x->index < y->index ? -1 : x->index > y->index;
}

/* One call's line on stdout: `ID: hung up`, `ID: <description> [TRYVOX_NAME]`, or its
 * JSON object. */
static void print_call(const struct opts *o, const char *id, int s, int http, const char *msg) {
    char nb[32];
    const char *name = status_name(s, nb);
    if (o->json) {
        fputs("{\"id\":", stdout);
        json_str(stdout, id);
        printf(",\"status\":\"%s\",\"code\":%d,\"http\":", name, s);
        if (http > 0)
            printf("%d", http);
        else
            fputs("null", stdout);
        fputs(",\"message\":", stdout);
        json_str(stdout, s == TRYVOX_OK ? "hung up" : msg);
        fputs("}\n", stdout);
    } else {
        plain_id(stdout, id);
        if (s == TRYVOX_OK)
            fputs(": hung up\n", stdout);
        else
            printf(": %s [%s]\n", msg, name);
    }
}

static void count_status(struct run *r, int s) {
    r->counts[s >= 0 && s < NSTATUS ? s : NSTATUS - 1]++;
}

/* The message of an ids-mode record. */
static const char *ids_message(const struct run *r, size_t i) {
    if (!valid_id(r->ids->v[i]))
        return "not a valid call id (1 to 128 characters from A-Z a-z 0-9 - _ . ~); not sent";
    if (r->http[i] == 0 && r->status[i] == TRYVOX_BUSY && interrupted) return "not sent: stopped by Ctrl-C";
    return tryvox_status_str(r->status[i]);
}

/* Prints the ids-mode records whose turn has come (every id before them is in). */
static void ids_print_ready(struct run *r) {
    while (r->next < r->ids->n && r->filled[r->next]) {
        size_t i = r->next++;
        if (r->bar->share) bar_clear(r->bar);
        count_status(r, r->status[i]);
        print_call(r->o, r->ids->v[i], r->status[i], r->http[i], ids_message(r, i));
    }
}

/* tryvox_sweep.on_call: each call as it settles. */
static void on_call(void *user_data, const char *id, int status, int http, const char *message) {
    struct run *r = user_data;
    audit_write(r->audit, id, status, http, message);
    if (r->all) {
        count_status(r, status);
        if (r->bar->share) bar_clear(r->bar);
        print_call(r->o, id, status, http, tryvox_status_str(status));
        return;
    }
    /* Which input position: the library starts ids in input order, so among copies of
     * an id a sent outcome belongs to the first position not filled yet and one never
     * sent (after a stop) to the last. */
    struct slot key = {id, 0};
    size_t lo = 0, hi = r->nslots;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (slot_cmp(&r->slots[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t end = lo;
    while (end < r->nslots && strcmp(r->slots[end].id, id) == 0) end++;
    int not_sent = http == 0 && strncmp(message, "not sent", 8) == 0;
    for (size_t k = 0; k < end - lo; k++) {
        size_t i = r->slots[not_sent ? end - 1 - k : lo + k].index;
        if (r->filled[i]) continue;
        r->status[i] = status;
        r->http[i] = http;
        r->filled[i] = 1;
        break;
    }
    ids_print_ready(r);
}

/* tryvox_sweep.on_listed, in a dry run: each live call found. */
static void on_listed(void *user_data, const char *id) {
    struct run *r = user_data;
    if (r->bar->share) bar_clear(r->bar);
    if (r->o->json) {
        fputs("{\"id\":", stdout);
        json_str(stdout, id);
        fputs(",\"live\":true}\n", stdout);
    } else {
        plain_id(stdout, id);
        fputs(": live\n", stdout);
    }
}

/* tryvox_sweep.progress: a frame of the bar (the bar keeps its own pace). */
static void on_progress(void *user_data, const struct tryvox_sweep *s) {
    struct run *r = user_data;
    char state[96] = "";
    if (interrupted)
        snprintf(state, sizeof state, "stopping: Ctrl-C again quits now");
    else if (s->listing)
        snprintf(state, sizeof state, "listing");
    else if (s->backoffs)
        snprintf(state, sizeof state, "429: %llu back-off(s), %llu in flight", (unsigned long long)s->backoffs,
                 (unsigned long long)s->parallel);
    uint64_t done = s->ended + s->already_gone + s->failed + r->invalid;
    bar_update(r->bar, done, s->found + r->invalid, state[0] ? state : NULL, r->last);
}

static void sweep_init(tryvox_sweep *sw, const struct opts *o, struct run *r) {
    memset(sw, 0, sizeof *sw);
    sw->size = sizeof *sw;
    sw->max_parallel = o->parallel;
    sw->max_rate = (uint32_t)o->max_rate;
    sw->progress = on_progress;
    sw->on_call = on_call;
    sw->user_data = r;
}

static void rate_summary_plain(const tryvox_sweep *sw) {
    fprintf(stderr, "  rate limits: %llu answer(s) 429, parallelism halved %llu time(s)\n",
            (unsigned long long)sw->rate_limited, (unsigned long long)sw->backoffs);
}

/* Hangs up `ids` and prints each outcome in input order; returns the exit status. */
static int run_ids(tryvox_client *c, const struct opts *o, struct idlist *ids, struct bar *b,
                   struct audit *audit) {
    size_t n = ids->n;
    struct run r = {0};
    r.o = o;
    r.bar = b;
    r.audit = audit;
    r.ids = ids;
    r.status = malloc(n * sizeof *r.status);
    r.http = calloc(n, sizeof *r.http);
    r.filled = calloc(n, 1);
    r.slots = malloc(n * sizeof *r.slots);
    const char **valid = malloc(n * sizeof *valid);
    int *sub = malloc(n * sizeof *sub);
    int *subhttp = malloc(n * sizeof *subhttp);
    size_t *where = malloc(n * sizeof *where);
    int code = -1;
    if (!r.status || !r.http || !r.filled || !r.slots || !valid || !sub || !subhttp || !where) {
        fprintf(stderr, "tryvox-hangup: out of memory\n");
        code = EXIT_CANNOT_START;
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (valid_id(ids->v[i])) {
            r.slots[k].id = ids->v[i];
            r.slots[k].index = i;
            valid[k] = ids->v[i];
            where[k++] = i;
        } else {
            r.status[i] = TRYVOX_INVALID_ARGUMENT;
            r.filled[i] = 1;
            r.invalid++;
            audit_write(audit, ids->v[i], TRYVOX_INVALID_ARGUMENT, 0, "not sent: not a valid call id");
        }
    }
    r.nslots = k;
    qsort(r.slots, k, sizeof *r.slots, slot_cmp);
    tryvox_sweep sw;
    sweep_init(&sw, o, &r);
    sw.found = k;
    catch_ctrl_c();
    bar_update(b, r.invalid, n, NULL, 1);
    ids_print_ready(&r);
    if (k > 0) {
        running_sweep = &sw;
        if (interrupted) tryvox_sweep_stop(&sw);
        int rc = tryvox_hangup_each(c, valid, k, sub, subhttp, &sw);
        running_sweep = NULL;
        if (rc != TRYVOX_OK)
            for (size_t j = 0; j < k; j++) { /* refused: nothing sent (BUSY) */
                sub[j] = rc;
                subhttp[j] = 0;
            }
        /* The library's arrays are the outcomes (on_call saw the same). */
        for (size_t j = 0; j < k; j++) {
            r.status[where[j]] = sub[j];
            r.http[where[j]] = subhttp[j];
            r.filled[where[j]] = 1;
        }
    }
    r.last = 1;
    on_progress(&r, &sw);
    bar_clear(b);
    ids_print_ready(&r);
    double elapsed = now_s() - b->start;
    int *status = r.status;

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
    code = interrupted ? EXIT_INTERRUPTED
                           : exit_for(first_failure != TRYVOX_OK ? first_failure : first_gone);

    tryvox_stats st;
    stats_read(c, &st);
    if (o->json) {
        printf("{\"summary\":{\"mode\":\"ids\",\"calls\":%zu,\"by_status\":{", n);
        int sep = 0;
        for (int s = 0; s < NSTATUS; s++) {
            if (!r.counts[s]) continue;
            char nb[32];
            printf("%s\"%s\":%llu", sep++ ? "," : "",
                   s == NSTATUS - 1 ? "TRYVOX_STATUS_OTHER" : status_name(s, nb),
                   (unsigned long long)r.counts[s]);
        }
        printf("},\"interrupted\":%s,\"rate_limited\":%llu,\"backoffs\":%llu,\"exit\":%d,"
               "\"elapsed_ms\":%.0f,",
               interrupted ? "true" : "false", (unsigned long long)sw.rate_limited,
               (unsigned long long)sw.backoffs, code, elapsed * 1000);
        stats_json(&st);
        fputs("}}\n", stdout);
    } else {
        fflush(stdout);
        fprintf(stderr, "summary: %zu call(s) in %.2f s, exit %d%s\n", n, elapsed, code,
                interrupted ? " (interrupted: ids not sent are listed as such)" : "");
        for (int s = 0; s < NSTATUS; s++) {
            if (!r.counts[s]) continue;
            char nb[32];
            fprintf(stderr, "  %-24s %8llu  %s\n",
                    s == NSTATUS - 1 ? "TRYVOX_STATUS_OTHER" : status_name(s, nb),
                    (unsigned long long)r.counts[s], s == TRYVOX_OK ? "hung up" : tryvox_status_str(s));
        }
        rate_summary_plain(&sw);
        stats_plain(&st);
    }
out:
    free(r.status);
    free(r.http);
    free(r.filled);
    free(r.slots);
    free(valid);
    free(sub);
    free(subhttp);
    free(where);
    return code;
}

/* "from=+1415..., direction=outbound", or "no filter". */
static void describe_filters(const struct opts *o, char *buf, size_t size) {
    snprintf(buf, size, "%s%s%s%s%s%s%s%s%s", o->from ? "from=" : "", o->from ? o->from : "",
             o->from && (o->to || o->direction) ? ", " : "", o->to ? "to=" : "", o->to ? o->to : "",
             o->to && o->direction ? ", " : "", o->direction ? "direction=" : "",
             o->direction ? o->direction : "", o->from || o->to || o->direction ? "" : "none");
}

/* On a terminal: lists the live calls, shows what would be ended and asks. Returns -1 to
 * go on, else the exit status (nothing was sent). */
static int confirm(tryvox_client *c, const struct opts *o, struct run *r, const char *account,
                   const char *tenant) {
    tryvox_sweep probe;
    sweep_init(&probe, o, r);
    probe.from = o->from;
    probe.to = o->to;
    probe.direction = o->direction;
    probe.timeout_ms = (uint32_t)o->timeout_ms;
    probe.dry_run = 1;
    probe.on_call = NULL;
    int rc = tryvox_hangup_all(c, &probe);
    bar_clear(r->bar);
    if (rc != TRYVOX_OK) {
        char nb[32];
        fprintf(stderr, "tryvox-hangup: could not list the live calls: %s [%s]; nothing was sent\n",
                tryvox_last_error(), status_name(rc, nb));
        return rc == TRYVOX_NOT_FOUND || rc == TRYVOX_ALREADY_ENDED ? TRYVOX_PROTOCOL_ERROR
                                                                   : exit_for(rc);
    }
    char filters[400];
    describe_filters(o, filters, sizeof filters);
    /* What was typed while the calls were being listed answers nothing: the operator
     * answers after seeing the count. */
    tcflush(STDIN_FILENO, TCIFLUSH);
    fprintf(stderr,
            "About to end %llu live call(s)\n  account: %s\n  tenant:  %s\n  filters: %s\n"
            "Calls that start before the sweep ends are ended too. End them? [y/N] ",
            (unsigned long long)probe.found, account, tenant ? tenant : "(none)", filters);
    fflush(stderr);
    char answer[64];
    if (!fgets(answer, sizeof answer, stdin)) answer[0] = '\0';
    char *a = answer;
    while (is_space(*a)) a++;
    size_t len = strlen(a);
    while (len && is_space(a[len - 1])) a[--len] = '\0';
    if (strcmp(a, "y") == 0 || strcmp(a, "Y") == 0 || strcmp(a, "yes") == 0 || strcmp(a, "YES") == 0 ||
        strcmp(a, "Yes") == 0)
        return -1;
    fprintf(stderr, "Not confirmed: nothing was sent.\n");
    return EXIT_DECLINED;
}

/* Ends every live call the filters select (or lists them: --dry-run); returns the exit
 * status. */
static int run_all(tryvox_client *c, const struct opts *o, struct bar *b, struct audit *audit,
                   const char *account, const char *tenant) {
    struct run r = {0};
    r.o = o;
    r.bar = b;
    r.audit = audit;
    r.all = 1;
    if (!o->dry_run && !o->yes) {
        int code = confirm(c, o, &r, account, tenant);
        if (code >= 0) return code;
        b->start = now_s();
        b->done = b->total = 0;
        b->count = 0;
    }
    tryvox_sweep sw;
    sweep_init(&sw, o, &r);
    sw.from = o->from;
    sw.to = o->to;
    sw.direction = o->direction;
    sw.timeout_ms = (uint32_t)o->timeout_ms;
    if (o->dry_run) {
        sw.dry_run = 1;
        sw.on_listed = on_listed;
    }
    catch_ctrl_c();
    bar_update(b, 0, 0, "listing", 1);
    running_sweep = &sw;
    if (interrupted) tryvox_sweep_stop(&sw);
    int rc = tryvox_hangup_all(c, &sw);
    running_sweep = NULL;
    char message[1024];
    snprintf(message, sizeof message, "%s", tryvox_last_error());
    r.last = 1;
    on_progress(&r, &sw);
    bar_clear(b);
    double elapsed = now_s() - b->start;
    /* 1 or 2 here would be a listing answered 404, not calls that are gone. */
    int code = interrupted ? EXIT_INTERRUPTED
               : rc == TRYVOX_NOT_FOUND || rc == TRYVOX_ALREADY_ENDED ? TRYVOX_PROTOCOL_ERROR
                                                                      : exit_for(rc);
    char nb[32];
    const char *name = status_name(rc, nb);
    const char *mode = o->dry_run ? "dry-run" : "all";
    tryvox_stats st;
    stats_read(c, &st);
    if (o->json) {
        printf("{\"summary\":{\"mode\":\"%s\",\"status\":\"%s\",\"code\":%d,\"message\":", mode, name, rc);
        json_str(stdout, rc == TRYVOX_OK ? "" : message);
        printf(",\"ended\":%llu,\"already_gone\":%llu,\"failed\":%llu,\"still_live\":%llu,"
               "\"listings\":%llu,\"found\":%llu,\"interrupted\":%s,\"rate_limited\":%llu,"
               "\"backoffs\":%llu,\"exit\":%d,\"elapsed_ms\":%.0f,",
               (unsigned long long)sw.ended, (unsigned long long)sw.already_gone,
               (unsigned long long)sw.failed, (unsigned long long)sw.still_live,
               (unsigned long long)sw.listings, (unsigned long long)sw.found,
               interrupted ? "true" : "false", (unsigned long long)sw.rate_limited,
               (unsigned long long)sw.backoffs, code, elapsed * 1000);
        stats_json(&st);
        fputs("}}\n", stdout);
    } else if (o->dry_run) {
        printf("dry run: %llu live call(s) found, none ended%s%s\n", (unsigned long long)sw.found,
               rc == TRYVOX_OK ? "" : ": ", rc == TRYVOX_OK ? "" : message);
        fflush(stdout);
        fprintf(stderr, "summary: --all --dry-run in %.2f s, exit %d\n", elapsed, code);
        stats_plain(&st);
    } else {
        printf("ended %llu, already gone %llu, failed %llu, still live %llu, listings %llu: %s",
               (unsigned long long)sw.ended, (unsigned long long)sw.already_gone,
               (unsigned long long)sw.failed, (unsigned long long)sw.still_live,
               (unsigned long long)sw.listings,
               rc == TRYVOX_OK ? "no live call left" : interrupted ? "stopped by Ctrl-C" : name);
        if (rc != TRYVOX_OK) printf(": %s", message);
        fputc('\n', stdout);
        fflush(stdout);
        fprintf(stderr, "summary: --all in %.2f s, exit %d\n", elapsed, code);
        for (int s = 0; s < NSTATUS; s++) {
            if (!r.counts[s]) continue;
            fprintf(stderr, "  %-24s %8llu  %s\n",
                    s == NSTATUS - 1 ? "TRYVOX_STATUS_OTHER" : status_name(s, nb),
                    (unsigned long long)r.counts[s], s == TRYVOX_OK ? "hung up" : tryvox_status_str(s));
        }
        rate_summary_plain(&sw);
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
    struct audit audit = {-1, account, tenant, o.all ? "all" : "ids", 0};
    if (code < 0 && o.audit_log && !o.dry_run) {
        audit.fd = open(o.audit_log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
        if (audit.fd < 0) {
            fprintf(stderr, "%s: --audit-log %s: %s; nothing was sent\n", prog, o.audit_log,
                    strerror(errno));
            code = EXIT_CANNOT_START;
        }
    }
    if (code < 0) {
        struct bar b;
        memset(&b, 0, sizeof b);
        b.start = now_s();
        b.on = !o.no_progress && isatty(STDERR_FILENO);
        b.share = isatty(STDOUT_FILENO);
        catch_signal(SIGWINCH, on_winch);
        code = o.all ? run_all(c, &o, &b, &audit, account, tenant) : run_ids(c, &o, &ids, &b, &audit);
    }
    if (audit.fd >= 0) {
        if (fsync(audit.fd) != 0 && errno != EINVAL) audit.failed = 1;
        if (close(audit.fd) != 0) audit.failed = 1;
        if (audit.failed) {
            fprintf(stderr, "%s: writing the audit log %s failed\n", prog, o.audit_log);
            if (code >= 0 && code <= 2) code = EXIT_OUTPUT;
        }
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
