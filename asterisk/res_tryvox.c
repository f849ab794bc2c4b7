/*
 * res_tryvox: end TryVox voice calls from Asterisk (dialplan, CLI, AMI), with libtryvox.
 *
 * Copyright (C) 2026, The libtryvox authors
 *
 * This program is free software, distributed under the terms of the GNU General Public
 * License Version 2 (as Asterisk modules are). libtryvox itself, linked in statically,
 * is MIT OR Apache-2.0; its MIT licence is compatible with the GPL.
 */

/*! \file
 *
 * \brief TryVox call hangups: TRYVOX_HANGUP(), TRYVOX_LIMIT(), CLI `tryvox ...`, AMI
 * TryvoxHangup.
 *
 * One libtryvox client per configuration, built from tryvox.conf at load and at each
 * reload. Threads that use it hold a reference for the length of one library call; a
 * reload swaps in a new client, moves every pending TRYVOX_LIMIT onto it, waits until
 * no thread is inside the old one and frees it (which waits for its async hangups), so
 * no hangup is lost and nothing is sent with the old key once the reload has returned.
 *
 * \ingroup resources
 */

/*** MODULEINFO
	<support_level>extended</support_level>
 ***/

/* Documentation (TRYVOX_HANGUP, TRYVOX_LIMIT, TryvoxHangup): res_tryvox-en_US.xml, which
 * `make install-asterisk-module` puts in $ASTDATADIR/documentation/thirdparty, where
 * Asterisk looks for the documentation of modules built outside its tree. */

#include "asterisk.h"

#include <math.h>
#include <string.h>

#include "asterisk/app.h"
#include "asterisk/ast_version.h"
#include "asterisk/astobj2.h"
#include "asterisk/channel.h"
#include "asterisk/cli.h"
#include "asterisk/config.h"
#include "asterisk/datastore.h"
#include "asterisk/lock.h"
#include "asterisk/logger.h"
#include "asterisk/manager.h"
#include "asterisk/module.h"
#include "asterisk/pbx.h"
#include "asterisk/strings.h"
#include "asterisk/time.h"
#include "asterisk/utils.h"

#include "tryvox.h"

#define CONFIG_FILE "tryvox.conf"
/*! The most timeout_ms and connect_timeout_ms may be, and the sweep's deadline. */
#define MAX_TIMEOUT_MS 60000

/* ---- names ---- */

static const char *const status_names[] = {
	"OK", "NOT_FOUND", "ALREADY_ENDED", "INVALID_ARGUMENT", "UNAUTHORIZED", "FORBIDDEN",
	"RATE_LIMITED", "SERVER_ERROR", "TIMEOUT", "NETWORK_ERROR", "TLS_ERROR",
	"PROTOCOL_ERROR", "INTERNAL_ERROR", "BUSY",
};

/*! The status's name without the TRYVOX_ prefix ("UNKNOWN" for a number added later). */
static const char *status_name(int status)
{
	if (status >= 0 && status < (int) ARRAY_LEN(status_names)) {
		return status_names[status];
	}
	return "UNKNOWN";
}

/*! The call is gone (ended now or before): what a caller asking "is it over?" wants. */
static int status_gone(int status)
{
	return status == TRYVOX_OK || status == TRYVOX_NOT_FOUND || status == TRYVOX_ALREADY_ENDED;
}

/*! A library message made safe for one AMI header or CLI line (no CR/LF). */
static void one_line(char *dst, size_t len, const char *src)
{
	size_t i;

	ast_copy_string(dst, S_OR(src, ""), len);
	for (i = 0; dst[i]; i++) {
		if (dst[i] == '\r' || dst[i] == '\n') {
			dst[i] = ' ';
		}
	}
}

/* ---- settings ---- */

/*! What tryvox.conf says, except the key (which lives only in the client). */
struct tv_settings {
	char account_id[129];
	char base_url[1024];
	char tenant_id[513];
	char ca_file[PATH_MAX];
	char proxy[1024];
	unsigned int timeout_ms;
	unsigned int connect_timeout_ms;
	unsigned int max_retries;
	unsigned int max_connections;
	int trust_store; /*!< a tryvox_trust_store value */
};

/*! trust_store's values in tryvox.conf, indexed by tryvox_trust_store. */
static const char *const trust_store_names[] = {
	[TRYVOX_TRUST_SYSTEM_OR_BUNDLED] = "system",
	[TRYVOX_TRUST_SYSTEM] = "system-only",
	[TRYVOX_TRUST_BUNDLED] = "bundled",
};

/*! What each trust_store value trusts, for `tryvox show status`. */
static const char *const trust_store_shown[] = {
	[TRYVOX_TRUST_SYSTEM_OR_BUNDLED] = "system (the system's trust store, else the bundled roots)",
	[TRYVOX_TRUST_SYSTEM] = "system-only (the system's trust store)",
	[TRYVOX_TRUST_BUNDLED] = "bundled (the roots built into libtryvox)",
};

/* ---- the client, counted by its users ---- */

struct tv_client {
	tryvox_client *client;
	struct tv_settings settings;
	int users;   /*!< threads inside a library call on it (under client_lock) */
	int retired; /*!< swapped out: the last user signals client_cond */
};

AST_MUTEX_DEFINE_STATIC(client_lock);
static ast_cond_t client_cond;
static struct tv_client *current; /*!< NULL while unloaded */

/*! The current client with a use taken (release with client_put), or NULL. */
static struct tv_client *client_get(void)
{
	struct tv_client *c;

	ast_mutex_lock(&client_lock);
	c = current;
	if (c) {
		c->users++;
	}
	ast_mutex_unlock(&client_lock);
	return c;
}

static void client_put(struct tv_client *c)
{
	ast_mutex_lock(&client_lock);
	if (--c->users == 0 && c->retired) {
		ast_cond_broadcast(&client_cond);
	}
	ast_mutex_unlock(&client_lock);
}

/*! Library log lines into Asterisk's logger. Runs on any thread; never sees the key. */
static void tv_log(void *user_data, int level, const char *message)
{
	(void) user_data;
	switch (level) {
	case 0:
		ast_log(LOG_ERROR, "TryVox: %s\n", message);
		break;
	case 1:
		ast_log(LOG_WARNING, "TryVox: %s\n", message);
		break;
	case 2:
		ast_verb(2, "TryVox: %s\n", message);
		break;
	default:
		ast_debug(1, "TryVox: %s\n", message);
		break;
	}
}

/*! Reads an unsigned setting; 0 on success, -1 (logged) when it is not a whole number. */
static int parse_uint(const struct ast_variable *v, unsigned int min, unsigned int max,
	unsigned int *out)
{
	if (ast_parse_arg(v->value, PARSE_UINT32 | PARSE_IN_RANGE, out, min, max)) {
		ast_log(LOG_ERROR, "%s line %d: %s = '%s' is not a whole number from %u to %u\n",
			CONFIG_FILE, v->lineno, v->name, v->value, min, max);
		return -1;
	}
	return 0;
}

/*!
 * Builds a client from tryvox.conf. NULL (with an error logged) when the file is missing
 * or a setting is missing or bad. The key is wiped from our copy when this returns.
 */
static struct tv_client *client_from_config(void)
{
	struct ast_flags flags = { 0 };
	struct ast_config *cfg;
	struct ast_variable *v;
	struct tv_client *c;
	tryvox_options *o = NULL;
	char key[513] = "", ua[128];
	int bad = 0, have_key = 0;

	cfg = ast_config_load2(CONFIG_FILE, "res_tryvox", flags);
	if (cfg == CONFIG_STATUS_FILEMISSING || cfg == CONFIG_STATUS_FILEINVALID) {
		ast_log(LOG_ERROR, "%s is %s: res_tryvox needs its [general] section with "
			"account_id and api_key\n", CONFIG_FILE,
			cfg == CONFIG_STATUS_FILEMISSING ? "missing" : "not valid");
		return NULL;
	}
	c = ast_calloc(1, sizeof(*c));
	if (!c) {
		ast_config_destroy(cfg);
		return NULL;
	}
	c->settings.timeout_ms = 10000;
	c->settings.connect_timeout_ms = 3000;
	c->settings.max_retries = 2;
	c->settings.max_connections = 64;
	o = tryvox_options_new();
	if (!o) {
		bad = 1;
	}
	for (v = ast_variable_browse(cfg, "general"); v && !bad; v = v->next) {
		struct tv_settings *s = &c->settings;
		int rc = TRYVOX_OK;

		if (!strcasecmp(v->name, "account_id")) {
			ast_copy_string(s->account_id, v->value, sizeof(s->account_id));
			if (strlen(v->value) >= sizeof(s->account_id) || ast_strlen_zero(v->value)) {
				ast_log(LOG_ERROR, "%s line %d: account_id must be 1 to 128 characters\n",
					CONFIG_FILE, v->lineno);
				bad = 1;
			}
		} else if (!strcasecmp(v->name, "api_key")) {
			/* Never logged, not even in part. */
			if (ast_strlen_zero(v->value) || strlen(v->value) >= sizeof(key)) {
				ast_log(LOG_ERROR, "%s line %d: api_key must be 1 to 512 visible characters\n",
					CONFIG_FILE, v->lineno);
				bad = 1;
			} else {
				ast_copy_string(key, v->value, sizeof(key));
				have_key = 1;
			}
		} else if (!strcasecmp(v->name, "base_url")) {
			ast_copy_string(s->base_url, v->value, sizeof(s->base_url));
			rc = tryvox_options_set_base_url(o, v->value);
		} else if (!strcasecmp(v->name, "tenant_id")) {
			ast_copy_string(s->tenant_id, v->value, sizeof(s->tenant_id));
			rc = tryvox_options_set_tenant_id(o, v->value);
		} else if (!strcasecmp(v->name, "timeout_ms")) {
			/* At most a minute: TRYVOX_HANGUP blocks its channel that long, and a reload
			 * or unload waits for the hangups in progress. */
			bad = parse_uint(v, 1, MAX_TIMEOUT_MS, &s->timeout_ms);
		} else if (!strcasecmp(v->name, "connect_timeout_ms")) {
			bad = parse_uint(v, 1, MAX_TIMEOUT_MS, &s->connect_timeout_ms);
		} else if (!strcasecmp(v->name, "max_connections")) {
			bad = parse_uint(v, 1, 1024, &s->max_connections);
		} else if (!strcasecmp(v->name, "max_retries")) {
			bad = parse_uint(v, 0, 100, &s->max_retries);
		} else if (!strcasecmp(v->name, "trust_store")) {
			size_t i;

			/* Checked here, as the numbers are: the library would only name its enum. */
			for (i = 0; i < ARRAY_LEN(trust_store_names); i++) {
				if (!strcasecmp(v->value, trust_store_names[i])) {
					break;
				}
			}
			if (i == ARRAY_LEN(trust_store_names)) {
				ast_log(LOG_ERROR, "%s line %d: trust_store = '%s' is not system, "
					"system-only or bundled\n", CONFIG_FILE, v->lineno, v->value);
				bad = 1;
			} else {
				s->trust_store = (int) i;
				rc = tryvox_options_set_trust_store(o, s->trust_store);
			}
		} else if (!strcasecmp(v->name, "ca_file")) {
			ast_copy_string(s->ca_file, v->value, sizeof(s->ca_file));
			rc = tryvox_options_set_ca_file(o, v->value);
		} else if (!strcasecmp(v->name, "proxy")) {
			ast_copy_string(s->proxy, v->value, sizeof(s->proxy));
			rc = tryvox_options_set_proxy(o, v->value);
		} else {
			ast_log(LOG_ERROR, "%s line %d: unknown setting '%s' in [general]\n",
				CONFIG_FILE, v->lineno, v->name);
			bad = 1;
		}
		if (rc != TRYVOX_OK) {
			ast_log(LOG_ERROR, "%s line %d: %s: %s\n", CONFIG_FILE, v->lineno, v->name,
				tryvox_last_error());
			bad = 1;
		}
	}
	ast_config_destroy(cfg);
	if (!bad && ast_strlen_zero(c->settings.account_id)) {
		ast_log(LOG_ERROR, "%s: account_id is missing from [general]\n", CONFIG_FILE);
		bad = 1;
	}
	if (!bad && !have_key) {
		ast_log(LOG_ERROR, "%s: api_key is missing from [general]\n", CONFIG_FILE);
		bad = 1;
	}
	if (!bad) {
		tryvox_options_set_timeout_ms(o, c->settings.timeout_ms);
		tryvox_options_set_connect_timeout_ms(o, c->settings.connect_timeout_ms);
		tryvox_options_set_max_retries(o, c->settings.max_retries);
		tryvox_options_set_max_connections(o, c->settings.max_connections);
		snprintf(ua, sizeof(ua), "res_tryvox asterisk/%s", ast_get_version());
		tryvox_options_set_user_agent(o, ua);
		tryvox_options_set_log_callback(o, tv_log, NULL);
		c->client = tryvox_client_new_with_options(c->settings.account_id, key, o);
		if (!c->client) {
			ast_log(LOG_ERROR, "%s: the TryVox client could not be created: %s\n",
				CONFIG_FILE, tryvox_last_error());
			bad = 1;
		}
	}
	explicit_bzero(key, sizeof(key));
	tryvox_options_free(o);
	if (bad) {
		ast_free(c);
		return NULL;
	}
	return c;
}

/* ---- scheduled hangups (TRYVOX_LIMIT) ---- */

/*! Milliseconds of CLOCK_MONOTONIC. */
static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/*!
 * One TRYVOX_LIMIT: an ao2 object. The channel's datastore holds a reference, and so
 * does the library while the timer is armed (its callback drops it).
 */
struct tv_limit {
	char call_uuid[129];
	char channel[AST_CHANNEL_NAME];
	int64_t due_ms;          /*!< CLOCK_MONOTONIC: a clock step moves no limit */
	tryvox_timer *timer;     /*!< under limits_lock */
	struct tv_client *owner; /*!< the client it is armed on (under limits_lock) */
	int pending;             /*!< armed, not fired or cancelled (under limits_lock) */
	AST_LIST_ENTRY(tv_limit) entry;
};

AST_MUTEX_DEFINE_STATIC(limits_lock);
static AST_LIST_HEAD_NOLOCK_STATIC(limits, tv_limit);
static unsigned int limits_pending;

static void limit_destroy(void *obj)
{
	struct tv_limit *l = obj;

	tryvox_timer_free(l->timer);
}

/*! Under limits_lock: the limit is no longer pending (the armed reference is the caller's). */
static void limit_unlist(struct tv_limit *l)
{
	if (l->pending) {
		l->pending = 0;
		AST_LIST_REMOVE(&limits, l, entry);
		limits_pending--;
	}
}

/*! The library's callback of a limit that fired (on a library thread). */
static void limit_fired(void *user_data, const char *call_uuid, int status, int http_status,
	const char *message)
{
	struct tv_limit *l = user_data;
	char msg[512];

	ast_mutex_lock(&limits_lock);
	limit_unlist(l);
	ast_mutex_unlock(&limits_lock);
	one_line(msg, sizeof(msg), message);
	if (status_gone(status)) {
		ast_verb(3, "TryVox: limit of call %s (set by %s) reached: %s\n", call_uuid,
			l->channel, status_name(status));
	} else {
		ast_log(LOG_WARNING, "TryVox: limit of call %s (set by %s) reached, hangup failed: "
			"%s: %s\n", call_uuid, l->channel, status_name(status), msg);
	}
	manager_event(EVENT_FLAG_CALL, "TryvoxLimit",
		"CallUUID: %s\r\nChannel: %s\r\nTryvoxStatus: %s\r\nHTTPStatus: %d\r\nMessage: %s\r\n",
		call_uuid, l->channel, status_name(status), http_status, msg);
	ao2_ref(l, -1);
}

/*!
 * Under limits_lock: arms `l` on `c` to fire `ms` from now; the armed reference is taken
 * here. Returns the library's status.
 */
static int limit_arm(struct tv_limit *l, struct tv_client *c, unsigned int ms)
{
	int rc;

	ao2_ref(l, +1);
	rc = tryvox_hangup_after(c->client, l->call_uuid, ms, limit_fired, l, &l->timer);
	if (rc != TRYVOX_OK) {
		ao2_ref(l, -1);
		return rc;
	}
	l->owner = c;
	l->pending = 1;
	AST_LIST_INSERT_TAIL(&limits, l, entry);
	limits_pending++;
	return rc;
}

/*! Cancels a pending limit. Too late (firing): its callback ends it. */
static void limit_cancel(struct tv_limit *l)
{
	int cancelled = 0;

	ast_mutex_lock(&limits_lock);
	if (l->pending && tryvox_timer_cancel(l->timer) == TRYVOX_OK) {
		limit_unlist(l);
		cancelled = 1;
	}
	ast_mutex_unlock(&limits_lock);
	if (cancelled) {
		ao2_ref(l, -1); /* the armed reference: its callback never runs */
	}
}

/*! Milliseconds until `due_ms` (0 if past). */
static unsigned int ms_until(int64_t due_ms)
{
	int64_t ms = due_ms - mono_ms();

	return ms <= 0 ? 0 : ms > UINT32_MAX ? UINT32_MAX : (unsigned int) ms;
}

/*!
 * Moves every limit armed on `from` onto `to` (a reload), keeping its due time; with
 * `to` NULL (unload) cancels them. A limit already firing is left to its callback.
 */
static void limits_move(struct tv_client *from, struct tv_client *to)
{
	struct tv_limit *l;
	AST_LIST_HEAD_NOLOCK(, tv_limit) moved = AST_LIST_HEAD_NOLOCK_INIT_VALUE;

	ast_mutex_lock(&limits_lock);
	AST_LIST_TRAVERSE_SAFE_BEGIN(&limits, l, entry) {
		if (l->owner != from || tryvox_timer_cancel(l->timer) != TRYVOX_OK) {
			continue;
		}
		AST_LIST_REMOVE_CURRENT(entry);
		limits_pending--;
		l->pending = 0;
		AST_LIST_INSERT_TAIL(&moved, l, entry);
	}
	AST_LIST_TRAVERSE_SAFE_END;
	while ((l = AST_LIST_REMOVE_HEAD(&moved, entry))) {
		tryvox_timer_free(l->timer);
		l->timer = NULL;
		if (to) {
			int rc = limit_arm(l, to, ms_until(l->due_ms));

			if (rc != TRYVOX_OK) {
				ast_log(LOG_ERROR, "TryVox: the limit of call %s could not be moved to the "
					"new client: %s\n", l->call_uuid, tryvox_last_error());
			}
		}
		ao2_ref(l, -1); /* the old arming's reference */
	}
	ast_mutex_unlock(&limits_lock);
}

/*! TRYVOX_LIMIT datastores alive: unload waits for a channel being destroyed. */
static int live_datastores;

static void limit_ds_destroy(void *data)
{
	struct tv_limit *l = data;

	if (!l) {
		return; /* allocated, never used */
	}
	limit_cancel(l); /* the channel ended first */
	ao2_ref(l, -1);
	ast_atomic_fetchadd_int(&live_datastores, -1);
}

static const struct ast_datastore_info limit_ds_info = {
	.type = "TRYVOX_LIMIT",
	.destroy = limit_ds_destroy,
};

/* ---- TRYVOX_HANGUP(call_uuid) ---- */

static int acf_hangup_read(struct ast_channel *chan, const char *cmd, char *data, char *buf,
	size_t len)
{
	struct tv_client *c;
	char http[16];
	int rc;

	(void) cmd;
	c = client_get();
	if (!c) {
		ast_copy_string(buf, "BUSY", len);
		if (chan) {
			pbx_builtin_setvar_helper(chan, "TRYVOX_ERROR", "res_tryvox is not loaded");
			pbx_builtin_setvar_helper(chan, "TRYVOX_HTTP_STATUS", "0");
		}
		return 0;
	}
	rc = tryvox_hangup(c->client, S_OR(data, ""));
	client_put(c);
	ast_copy_string(buf, status_name(rc), len);
	if (chan) {
		snprintf(http, sizeof(http), "%d", tryvox_last_http_status());
		pbx_builtin_setvar_helper(chan, "TRYVOX_ERROR", tryvox_last_error());
		pbx_builtin_setvar_helper(chan, "TRYVOX_HTTP_STATUS", http);
	}
	return 0;
}

static struct ast_custom_function acf_hangup = {
	.name = "TRYVOX_HANGUP",
	.read = acf_hangup_read,
	.read_max = 32,
};

/* ---- TRYVOX_LIMIT(call_uuid) ---- */

static int acf_limit_read(struct ast_channel *chan, const char *cmd, char *data, char *buf,
	size_t len)
{
	struct ast_datastore *ds;

	(void) cmd;
	*buf = '\0';
	if (!chan || ast_strlen_zero(data)) {
		return 0;
	}
	ast_channel_lock(chan);
	ds = ast_channel_datastore_find(chan, &limit_ds_info, data);
	if (ds) {
		struct tv_limit *l = ds->data;

		ast_mutex_lock(&limits_lock);
		if (l->pending) {
			unsigned int ms = ms_until(l->due_ms);

			snprintf(buf, len, "%u", ms / 1000 + (ms % 1000 != 0));
		}
		ast_mutex_unlock(&limits_lock);
	}
	ast_channel_unlock(chan);
	return 0;
}

/*!
 * Parses a limit: whole seconds with up to three decimals ("90", "1.5", "0.25"), at most
 * 4294967.295 s (the library's 32-bit milliseconds). 0 on success.
 */
static int parse_limit(const char *v, unsigned int *ms_out)
{
	uint64_t ms = 0;
	int digits = 0, decimals = -1;
	const char *p;

	for (p = v; *p; p++) {
		if (*p == '.' && decimals < 0 && digits > 0) {
			decimals = 0;
		} else if (*p >= '0' && *p <= '9' && digits < 8 && decimals < 3) {
			ms = ms * 10 + (uint64_t) (*p - '0');
			if (decimals >= 0) {
				decimals++;
			} else {
				digits++;
			}
		} else {
			return -1;
		}
	}
	if (digits == 0 || decimals == 0) {
		return -1; /* "", ".5", "5." */
	}
	for (decimals = decimals < 0 ? 0 : decimals; decimals < 3; decimals++) {
		ms *= 10;
	}
	if (ms > UINT32_MAX) {
		return -1;
	}
	*ms_out = (unsigned int) ms;
	return 0;
}

static int acf_limit_write(struct ast_channel *chan, const char *cmd, char *data,
	const char *value)
{
	struct ast_datastore *ds, *old = NULL;
	struct tv_limit *l;
	struct tv_client *c;
	const char *id = S_OR(data, "");
	const char *why = NULL;
	unsigned int ms;
	int rc = TRYVOX_OK;

	(void) cmd;
	if (!chan) {
		ast_log(LOG_WARNING, "TRYVOX_LIMIT needs a channel\n");
		return -1;
	}
	if (parse_limit(S_OR(value, ""), &ms)) {
		ast_log(LOG_WARNING, "TRYVOX_LIMIT(%s): '%s' is not a number of seconds from 0 to "
			"4294967.295 (at most three decimals)\n", id, S_OR(value, ""));
		pbx_builtin_setvar_helper(chan, "TRYVOX_ERROR",
			"the limit is not a number of seconds (at most three decimals)");
		return -1;
	}
	if (strlen(id) >= sizeof(l->call_uuid)) {
		ast_log(LOG_WARNING, "TRYVOX_LIMIT: the call id is longer than 128 characters\n");
		pbx_builtin_setvar_helper(chan, "TRYVOX_ERROR", "the call id is longer than 128 characters");
		return -1;
	}
	l = ao2_alloc(sizeof(*l), limit_destroy);
	ds = l ? __ast_datastore_alloc(&limit_ds_info, id, NULL, __FILE__, __LINE__,
		__PRETTY_FUNCTION__) : NULL;
	if (!ds) {
		ao2_cleanup(l);
		return -1;
	}
	/* No module reference (unlike ast_datastore_alloc): `module unload` is not refused
	 * while calls have limits; it removes these datastores itself (strip_datastores). */
	ast_copy_string(l->call_uuid, id, sizeof(l->call_uuid));
	ast_copy_string(l->channel, ast_channel_name(chan), sizeof(l->channel));
	l->due_ms = mono_ms() + ms;
	c = client_get();
	/* Under the channel's lock from the lookup to the add: two writers on one channel
	 * (its dialplan and `dialplan set chanvar`) cannot both keep a limit. */
	ast_channel_lock(chan);
	old = ast_channel_datastore_find(chan, &limit_ds_info, id);
	if (old) {
		ast_channel_datastore_remove(chan, old);
	}
	if (ms > 0) {
		if (!c) {
			rc = TRYVOX_BUSY;
			why = "res_tryvox is not loaded";
		} else {
			ast_mutex_lock(&limits_lock);
			rc = limit_arm(l, c, ms);
			ast_mutex_unlock(&limits_lock);
			if (rc != TRYVOX_OK) {
				why = tryvox_last_error();
			}
		}
		if (rc == TRYVOX_OK) {
			ds->data = l; /* the datastore's reference */
			l = NULL;
			ast_atomic_fetchadd_int(&live_datastores, +1);
			ast_channel_datastore_add(chan, ds);
			ds = NULL;
		}
	}
	ast_channel_unlock(chan);
	if (c) {
		client_put(c);
	}
	if (old) {
		ast_datastore_free(old); /* replaced or cancelled: cancels its limit */
	}
	if (ds) {
		ast_datastore_free(ds); /* not used: no data, nothing to cancel */
	}
	ao2_cleanup(l);
	if (why) {
		ast_log(LOG_WARNING, "TRYVOX_LIMIT(%s): %s: %s\n", id, status_name(rc), why);
		pbx_builtin_setvar_helper(chan, "TRYVOX_ERROR", why);
		return -1;
	}
	pbx_builtin_setvar_helper(chan, "TRYVOX_ERROR", "");
	return 0;
}

static struct ast_custom_function acf_limit = {
	.name = "TRYVOX_LIMIT",
	.read = acf_limit_read,
	.read_max = 16,
	.write = acf_limit_write,
};

/*! Removes every TRYVOX_LIMIT datastore from every channel (unload: their destroy
 * function is this module's code), and waits (5 s at most) for those of channels being
 * destroyed meanwhile. */
static void strip_datastores(void)
{
	struct ast_channel_iterator *it = ast_channel_iterator_all_new();
	struct ast_channel *chan;
	struct ast_datastore *ds;
	int waited;

	if (!it) {
		return;
	}
	while ((chan = ast_channel_iterator_next(it))) {
		ast_channel_lock(chan);
		while ((ds = ast_channel_datastore_find(chan, &limit_ds_info, NULL))) {
			ast_channel_datastore_remove(chan, ds);
			ast_datastore_free(ds);
		}
		ast_channel_unlock(chan);
		ast_channel_unref(chan);
	}
	ast_channel_iterator_destroy(it);
	for (waited = 0; waited < 500 && ast_atomic_fetchadd_int(&live_datastores, 0) > 0; waited++) {
		usleep(10000);
	}
}

/* ---- CLI ---- */

/*! A `tryvox hangup all` is running (at most one: two would send every hangup twice). */
static int sweeping;

struct sweep_cli {
	int fd;
};

static void sweep_progress(void *user_data, const struct tryvox_sweep *s)
{
	struct sweep_cli *p = user_data;

	ast_cli(p->fd, "  listing %" PRIu64 ": %" PRIu64 " ended, %" PRIu64 " already gone, %"
		PRIu64 " failed\n", s->listings, s->ended, s->already_gone, s->failed);
}

static char *cli_hangup_all(struct ast_cli_args *a, struct tv_client *c)
{
	struct tryvox_sweep s;
	struct sweep_cli p = { .fd = a->fd };
	char msg[512];
	int i, rc;

	memset(&s, 0, sizeof(s));
	s.size = sizeof(s);
	for (i = 3; i + 1 < a->argc; i += 2) {
		if (!strcasecmp(a->argv[i], "from")) {
			s.from = a->argv[i + 1];
		} else if (!strcasecmp(a->argv[i], "to")) {
			s.to = a->argv[i + 1];
		} else {
			return CLI_SHOWUSAGE;
		}
	}
	if (i != a->argc) {
		return CLI_SHOWUSAGE;
	}
	s.progress = sweep_progress;
	s.user_data = &p;
	s.timeout_ms = MAX_TIMEOUT_MS;
	ast_cli(a->fd, "Ending every live call of account %s%s%s%s%s...\n",
		c->settings.account_id, s.from ? " from " : "", S_OR(s.from, ""),
		s.to ? " to " : "", S_OR(s.to, ""));
	rc = tryvox_hangup_all(c->client, &s);
	one_line(msg, sizeof(msg), tryvox_last_error());
	ast_cli(a->fd, "%s: %" PRIu64 " ended, %" PRIu64 " already gone, %" PRIu64 " failed, %"
		PRIu64 " still live, %" PRIu64 " listings%s%s\n", status_name(rc), s.ended,
		s.already_gone, s.failed, s.still_live, s.listings, *msg ? ": " : "", msg);
	return CLI_SUCCESS;
}

static char *cli_hangup(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	struct tv_client *c;
	const char **ids;
	int *statuses;
	size_t n, i;
	unsigned int count[ARRAY_LEN(status_names) + 1] = { 0 };
	int rc;

	switch (cmd) {
	case CLI_INIT:
		e->command = "tryvox hangup";
		e->usage =
			"Usage: tryvox hangup <call_uuid> [<call_uuid> ...]\n"
			"       tryvox hangup all [from <number>] [to <number>]\n"
			"       Ends TryVox calls: the ids given (all at once, one line each), or every\n"
			"       live call of the account (its tenant), listing until none is left.\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc < 3) {
		return CLI_SHOWUSAGE;
	}
	c = client_get();
	if (!c) {
		ast_cli(a->fd, "res_tryvox is not loaded\n");
		return CLI_FAILURE;
	}
	if (!strcasecmp(a->argv[2], "all")) {
		char *r;

		if (ast_atomic_fetchadd_int(&sweeping, 1) != 0) {
			ast_atomic_fetchadd_int(&sweeping, -1);
			client_put(c);
			ast_cli(a->fd, "A 'tryvox hangup all' is already running: nothing sent\n");
			return CLI_FAILURE;
		}
		r = cli_hangup_all(a, c);
		ast_atomic_fetchadd_int(&sweeping, -1);
		client_put(c);
		return r;
	}
	if (a->argc >= AST_MAX_ARGS - 1) {
		/* Asterisk's CLI drops the words past its limit (with only a log line): a list
		 * that reaches it may have lost ids, so nothing is sent. */
		client_put(c);
		ast_cli(a->fd, "At most %d call ids per command (Asterisk's CLI limit): nothing "
			"sent\n", AST_MAX_ARGS - 4);
		return CLI_FAILURE;
	}
	n = a->argc - 2;
	ids = ast_calloc(n, sizeof(*ids));
	statuses = ast_calloc(n, sizeof(*statuses));
	if (!ids || !statuses) {
		client_put(c);
		ast_free(ids);
		ast_free(statuses);
		return CLI_FAILURE;
	}
	for (i = 0; i < n; i++) {
		ids[i] = a->argv[i + 2];
	}
	rc = tryvox_hangup_many(c->client, ids, n, statuses, 0);
	client_put(c);
	if (rc != TRYVOX_OK) {
		/* Nothing was sent (an invalid id: the message names it). */
		ast_cli(a->fd, "%s: %s\n", status_name(rc), tryvox_last_error());
	} else {
		for (i = 0; i < n; i++) {
			int s = statuses[i];

			ast_cli(a->fd, "%s %s\n", ids[i], status_name(s));
			count[s >= 0 && s < (int) ARRAY_LEN(status_names) ? s : (int) ARRAY_LEN(status_names)]++;
		}
		ast_cli(a->fd, "%zu calls:", n);
		for (i = 0; i < ARRAY_LEN(count); i++) {
			if (count[i]) {
				ast_cli(a->fd, " %u %s", count[i], i < ARRAY_LEN(status_names) ?
					status_names[i] : "UNKNOWN");
			}
		}
		ast_cli(a->fd, "\n");
	}
	ast_free(ids);
	ast_free(statuses);
	return rc == TRYVOX_OK ? CLI_SUCCESS : CLI_FAILURE;
}

/*! The proxy URL with any user:password replaced. */
static void redact_proxy(char *dst, size_t len, const char *proxy)
{
	const char *at = strrchr(proxy, '@');
	const char *scheme = strstr(proxy, "://");

	if (at && scheme && at > scheme) {
		snprintf(dst, len, "%.*s://***@%s", (int) (scheme - proxy), proxy, at + 1);
	} else {
		ast_copy_string(dst, proxy, len);
	}
}

static char *cli_show_status(struct ast_cli_entry *e, int cmd, struct ast_cli_args *a)
{
	struct tv_client *c;
	struct tryvox_stats st;
	char proxy[1024];
	unsigned int pending;
	size_t i;

	switch (cmd) {
	case CLI_INIT:
		e->command = "tryvox show status";
		e->usage =
			"Usage: tryvox show status\n"
			"       Shows res_tryvox's settings (the API key never), the client's\n"
			"       statistics and the scheduled hangups (TRYVOX_LIMIT) pending.\n";
		return NULL;
	case CLI_GENERATE:
		return NULL;
	}
	if (a->argc != 3) {
		return CLI_SHOWUSAGE;
	}
	c = client_get();
	if (!c) {
		ast_cli(a->fd, "res_tryvox is not loaded\n");
		return CLI_FAILURE;
	}
	memset(&st, 0, sizeof(st));
	st.size = sizeof(st);
	tryvox_client_stats(c->client, &st);
	redact_proxy(proxy, sizeof(proxy), c->settings.proxy);
	ast_mutex_lock(&limits_lock);
	pending = limits_pending;
	ast_mutex_unlock(&limits_lock);
	ast_cli(a->fd, "res_tryvox, libtryvox %s\n", tryvox_version());
	ast_cli(a->fd, "  Account:             %s\n", c->settings.account_id);
	ast_cli(a->fd, "  API key:             (set, never shown)\n");
	ast_cli(a->fd, "  Base URL:            %s\n", S_OR(c->settings.base_url,
		"https://api.tryvox.io"));
	ast_cli(a->fd, "  Tenant:              %s\n", S_OR(c->settings.tenant_id, "(none)"));
	ast_cli(a->fd, "  Timeout:             %u ms\n", c->settings.timeout_ms);
	ast_cli(a->fd, "  Connect timeout:     %u ms\n", c->settings.connect_timeout_ms);
	ast_cli(a->fd, "  Max retries:         %u\n", c->settings.max_retries);
	ast_cli(a->fd, "  CA file:             %s\n", S_OR(c->settings.ca_file, "(none)"));
	/* A CA file replaces every trust store: say so rather than show one not used. */
	ast_cli(a->fd, "  Trust store:         %s\n", ast_strlen_zero(c->settings.ca_file)
		? trust_store_shown[c->settings.trust_store] : "(not used: the CA file replaces it)");
	ast_cli(a->fd, "  Proxy:               %s\n", S_OR(proxy, "(none)"));
	ast_cli(a->fd, "Hangups by status:\n");
	for (i = 0; i < ARRAY_LEN(status_names); i++) {
		if (st.hangups_by_status[i]) {
			ast_cli(a->fd, "  %-20s %" PRIu64 "\n", status_names[i], st.hangups_by_status[i]);
		}
	}
	ast_cli(a->fd, "Attempts:              %" PRIu64 " (retries: %" PRIu64 " connection, %"
		PRIu64 " rate limited, %" PRIu64 " server error)\n", st.attempts,
		st.retries_connection, st.retries_rate_limited, st.retries_server_error);
	ast_cli(a->fd, "In flight:             %" PRIu64 "\n", st.in_flight);
	ast_cli(a->fd, "Connections:           %" PRIu64 " open, %" PRIu64 " opened\n",
		st.connections_open, st.connections_opened);
	ast_cli(a->fd, "Latency (us):          p50 %" PRIu64 ", p90 %" PRIu64 ", p99 %" PRIu64
		", max %" PRIu64 "\n", st.latency_p50_us, st.latency_p90_us, st.latency_p99_us,
		st.latency_max_us);
	ast_cli(a->fd, "Scheduled hangups pending: %u\n", pending);
	client_put(c);
	return CLI_SUCCESS;
}

static struct ast_cli_entry cli_tryvox[] = {
	AST_CLI_DEFINE(cli_hangup, "Hang up TryVox calls"),
	AST_CLI_DEFINE(cli_show_status, "Show res_tryvox settings and statistics"),
};

/* ---- AMI ---- */

/*! An async AMI hangup's context: the ActionID to answer with (any length). */
struct ami_async {
	char *action_id;
};

static void ami_async_done(void *user_data, const char *call_uuid, int status, int http_status,
	const char *message)
{
	struct ami_async *ctx = user_data;
	char msg[512];

	one_line(msg, sizeof(msg), message);
	manager_event(EVENT_FLAG_CALL, "TryvoxHangupResponse",
		"%s%s%sCallUUID: %s\r\nTryvoxStatus: %s\r\nHTTPStatus: %d\r\nMessage: %s\r\n",
		ctx->action_id ? "ActionID: " : "", S_OR(ctx->action_id, ""),
		ctx->action_id ? "\r\n" : "", call_uuid, status_name(status), http_status, msg);
	ast_free(ctx->action_id);
	ast_free(ctx);
}

static int ami_tryvox_hangup(struct mansession *s, const struct message *m)
{
	const char *id = astman_get_header(m, "CallUUID");
	const char *action_id = astman_get_header(m, "ActionID");
	int async = ast_true(astman_get_header(m, "Async"));
	char msg[512];
	struct tv_client *c;
	int rc, http = 0;

	if (ast_strlen_zero(id)) {
		astman_send_error(s, m, "CallUUID is required");
		return 0;
	}
	c = client_get();
	if (!c) {
		astman_send_error(s, m, "res_tryvox is not loaded");
		return 0;
	}
	if (async) {
		struct ami_async *ctx = ast_calloc(1, sizeof(*ctx));

		if (!ctx) {
			client_put(c);
			astman_send_error(s, m, "out of memory");
			return 0;
		}
		if (!ast_strlen_zero(action_id)) {
			ctx->action_id = ast_strdup(action_id); /* a header: one line already */
		}
		rc = tryvox_hangup_async(c->client, id, ami_async_done, ctx);
		client_put(c);
		if (rc == TRYVOX_OK) {
			astman_send_ack(s, m, "Hangup queued; a TryvoxHangupResponse event follows");
			return 0;
		}
		ast_free(ctx->action_id);
		ast_free(ctx);
	} else {
		rc = tryvox_hangup(c->client, id);
		http = tryvox_last_http_status();
		client_put(c);
	}
	one_line(msg, sizeof(msg), tryvox_last_error());
	astman_append(s, "Response: %s\r\n", status_gone(rc) ? "Success" : "Error");
	if (!ast_strlen_zero(action_id)) {
		astman_append(s, "ActionID: %s\r\n", action_id);
	}
	astman_append(s, "TryvoxStatus: %s\r\nHTTPStatus: %d\r\nMessage: %s\r\n\r\n",
		status_name(rc), http, rc == TRYVOX_OK ? "Call hung up" : msg);
	return 0;
}

/* ---- load, reload, unload ---- */

/*!
 * Makes `next` current (NULL: unload), moves or cancels the old client's limits, waits
 * until no thread is inside the old client and frees it. tryvox_client_free waits for
 * its async hangups and delivers their callbacks (this module's code: still loaded).
 */
static void client_swap(struct tv_client *next)
{
	struct tv_client *old;

	ast_mutex_lock(&client_lock);
	old = current;
	current = next;
	if (old) {
		old->retired = 1;
		while (old->users > 0) {
			ast_cond_wait(&client_cond, &client_lock);
		}
	}
	ast_mutex_unlock(&client_lock);
	if (!old) {
		return;
	}
	limits_move(old, next);
	tryvox_client_free(old->client);
	ast_free(old);
}

static int reload_module(void)
{
	struct tv_client *next = client_from_config();

	if (!next) {
		ast_log(LOG_ERROR, "res_tryvox: %s not reloaded; the previous settings stay in use\n",
			CONFIG_FILE);
		return AST_MODULE_LOAD_DECLINE;
	}
	ast_mutex_lock(&client_lock);
	if (current && (strcmp(current->settings.account_id, next->settings.account_id)
		|| strcmp(current->settings.tenant_id, next->settings.tenant_id))) {
		ast_log(LOG_WARNING, "res_tryvox: the account or tenant changed: pending "
			"TRYVOX_LIMITs move to the new one and end that account's calls of those ids\n");
	}
	ast_mutex_unlock(&client_lock);
	client_swap(next);
	ast_verb(2, "res_tryvox: %s reloaded\n", CONFIG_FILE);
	return AST_MODULE_LOAD_SUCCESS;
}

/*!
 * Asterisk's shutdown (`core stop now` too) does not unload modules: end what is pending
 * here. Hangups in flight finish within their deadline; limits not yet due are dropped,
 * and counted in the log.
 */
static void at_shutdown(void)
{
	unsigned int pending;

	ast_mutex_lock(&limits_lock);
	pending = limits_pending;
	ast_mutex_unlock(&limits_lock);
	if (pending) {
		ast_log(LOG_WARNING, "res_tryvox: Asterisk is stopping: %u scheduled hangup%s "
			"(TRYVOX_LIMIT) not sent\n", pending, pending == 1 ? "" : "s");
	}
	client_swap(NULL);
}

static int unload_module(void)
{
	ast_unregister_atexit(at_shutdown);
	ast_manager_unregister("TryvoxHangup");
	ast_cli_unregister_multiple(cli_tryvox, ARRAY_LEN(cli_tryvox));
	ast_custom_function_unregister(&acf_hangup);
	ast_custom_function_unregister(&acf_limit);
	strip_datastores();    /* their destroy function is ours; cancels what they hold */
	client_swap(NULL);     /* cancels the rest, waits for users and in-flight hangups */
	ast_cond_destroy(&client_cond);
	return 0;
}

static int load_module(void)
{
	struct tv_client *c;

	ast_cond_init(&client_cond, NULL);
	c = client_from_config();
	if (!c) {
		ast_log(LOG_ERROR, "res_tryvox declined to load: fix %s and run "
			"'module load res_tryvox.so'\n", CONFIG_FILE);
		ast_cond_destroy(&client_cond);
		return AST_MODULE_LOAD_DECLINE;
	}
	current = c;
	if (ast_register_atexit(at_shutdown)
		|| ast_custom_function_register_escalating(&acf_hangup, AST_CFE_READ)
		|| ast_custom_function_register_escalating(&acf_limit, AST_CFE_BOTH)
		|| ast_cli_register_multiple(cli_tryvox, ARRAY_LEN(cli_tryvox))
		|| ast_manager_register2("TryvoxHangup", EVENT_FLAG_CALL, ami_tryvox_hangup,
			AST_MODULE_SELF, "Hang up a TryVox call",
			"CallUUID: the TryVox call to end. Async: true answers at once and sends a\n"
			"TryvoxHangupResponse event (with the ActionID) when the hangup is done.\n"
			"The response carries TryvoxStatus (OK, NOT_FOUND, ...), HTTPStatus and\n"
			"Message; Response is Success when the call is gone (OK, NOT_FOUND,\n"
			"ALREADY_ENDED), Error otherwise.\n")) {
		unload_module();
		return AST_MODULE_LOAD_DECLINE;
	}
	ast_verb(2, "res_tryvox: account %s, libtryvox %s\n", c->settings.account_id,
		tryvox_version());
	return AST_MODULE_LOAD_SUCCESS;
}

AST_MODULE_INFO(ASTERISK_GPL_KEY, AST_MODFLAG_LOAD_ORDER, "TryVox call hangups",
	.support_level = AST_MODULE_SUPPORT_EXTENDED,
	.load = load_module,
	.unload = unload_module,
	.reload = reload_module,
	.load_pri = AST_MODPRI_DEFAULT,
);
