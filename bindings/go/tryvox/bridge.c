// C trampolines: the library calls these with its own signatures (const char *, void *),
// and they pass on to the functions exported from async.go, whose cgo prototypes use
// char * and uintptr_t. The user_data pointer carries a runtime/cgo Handle, never a Go
// pointer.
#include <stdint.h>
#include "tryvox.h"
#include "_cgo_export.h"

static void tryvoxgo_hangup_done(void *user_data, const char *call_uuid, int status,
                                 int http_status, const char *message) {
    tryvoxGoHangupDone((uintptr_t)user_data, (char *)call_uuid, status, http_status,
                       (char *)message);
}

static void tryvoxgo_log(void *user_data, int level, const char *message) {
    tryvoxGoLog((uintptr_t)user_data, level, (char *)message);
}

int tryvoxgo_hangup_async(tryvox_client *client, const char *call_uuid, uintptr_t handle) {
    return tryvox_hangup_async(client, call_uuid, tryvoxgo_hangup_done, (void *)handle);
}

int tryvoxgo_set_log(tryvox_options *o, uintptr_t handle) {
    return tryvox_options_set_log_callback(o, tryvoxgo_log, (void *)handle);
}
