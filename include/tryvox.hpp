/*
 * tryvox.hpp: a header-only C++11 wrapper over tryvox.h.
 *
 * - tryvox::client owns a tryvox_client (RAII; movable, not copyable). Its destructor
 *   waits for queued async hangups, like tryvox_client_free.
 * - Errors map onto std::error_code through tryvox::category(); tryvox::status is an
 *   error-code enum, so `ec == tryvox::status::not_found` works.
 * - Two styles: hangup(id) throws tryvox::error unless the call was ended;
 *   hangup(id, ec) never throws and reports through ec.
 * - client::stats() returns a tryvox::stats: the C tryvox_stats snapshot (size filled in),
 *   with hangups(status) and the latencies as std::chrono::microseconds.
 * - Thread-safety is the C library's: one client may be used from many threads at once.
 */
#ifndef TRYVOX_HPP
#define TRYVOX_HPP

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "tryvox.h"

namespace tryvox {

/** The C status numbers as a scoped enum. */
enum class status : int {
    ok = TRYVOX_OK,
    not_found = TRYVOX_NOT_FOUND,
    already_ended = TRYVOX_ALREADY_ENDED,
    invalid_argument = TRYVOX_INVALID_ARGUMENT,
    unauthorized = TRYVOX_UNAUTHORIZED,
    forbidden = TRYVOX_FORBIDDEN,
    rate_limited = TRYVOX_RATE_LIMITED,
    server_error = TRYVOX_SERVER_ERROR,
    timeout = TRYVOX_TIMEOUT,
    network_error = TRYVOX_NETWORK_ERROR,
    tls_error = TRYVOX_TLS_ERROR,
    protocol_error = TRYVOX_PROTOCOL_ERROR,
    internal_error = TRYVOX_INTERNAL_ERROR,
    busy = TRYVOX_BUSY
};

namespace detail {
class category_impl : public std::error_category {
  public:
    const char *name() const noexcept override { return "tryvox"; }
    std::string message(int ev) const override { return tryvox_status_str(ev); }
};
}  // namespace detail

/** The error category of tryvox statuses. */
inline const std::error_category &category() noexcept {
    static const detail::category_impl instance;
    return instance;
}

inline std::error_code make_error_code(status s) noexcept {
    return std::error_code(static_cast<int>(s), category());
}

/** True for ok, not_found and already_ended: either way the call is not running. */
inline bool call_is_gone(std::error_code ec) noexcept {
    return !ec || ec == make_error_code(status::not_found) ||
           ec == make_error_code(status::already_ended);
}

/** A failed tryvox call: the status as code(), plus the HTTP status and server code. */
class error : public std::system_error {
  public:
    error(status s, const std::string &what, int http_status, std::string server_code)
        : std::system_error(make_error_code(s), what),
          http_status_(http_status),
          server_code_(std::move(server_code)) {}
    status code_status() const noexcept { return static_cast<status>(code().value()); }
    int http_status() const noexcept { return http_status_; }
    const std::string &server_code() const noexcept { return server_code_; }

  private:
    int http_status_;
    std::string server_code_;
};

namespace detail {
/** Throws tryvox::error for a non-OK status, from this thread's last error. */
inline void check(int rc) {
    if (rc != TRYVOX_OK)
        throw error(static_cast<status>(rc), tryvox_last_error(), tryvox_last_http_status(),
                    tryvox_last_error_code());
}
}  // namespace detail

/** Settings for a client; plain data for one thread. Setters throw tryvox::error. */
class options {
  public:
    options() : p_(tryvox_options_new()) {
        if (!p_) throw std::bad_alloc();
    }
    ~options() { tryvox_options_free(p_); }
    options(const options &) = delete;
    options &operator=(const options &) = delete;

    options &base_url(const std::string &v) { return set(tryvox_options_set_base_url(p_, v.c_str())); }
    options &timeout_ms(std::uint32_t v) { return set(tryvox_options_set_timeout_ms(p_, v)); }
    options &connect_timeout_ms(std::uint32_t v) { return set(tryvox_options_set_connect_timeout_ms(p_, v)); }
    options &max_retries(std::uint32_t v) { return set(tryvox_options_set_max_retries(p_, v)); }
    options &tenant_id(const std::string &v) { return set(tryvox_options_set_tenant_id(p_, v.c_str())); }
    options &user_agent(const std::string &v) { return set(tryvox_options_set_user_agent(p_, v.c_str())); }
    options &ca_file(const std::string &v) { return set(tryvox_options_set_ca_file(p_, v.c_str())); }
    options &proxy(const std::string &v) { return set(tryvox_options_set_proxy(p_, v.c_str())); }
    /** TRYVOX_TRUST_SYSTEM_OR_BUNDLED (the default), TRYVOX_TRUST_SYSTEM or TRYVOX_TRUST_BUNDLED. */
    options &trust_store(tryvox_trust_store v) {
        return set(tryvox_options_set_trust_store(p_, static_cast<int>(v)));
    }
    options &allow_insecure_http(bool v) { return set(tryvox_options_allow_insecure_http(p_, v ? 1 : 0)); }
    /** The callback and user_data must outlive every client built from these options. */
    options &log_callback(tryvox_log_callback cb, void *user_data) {
        return set(tryvox_options_set_log_callback(p_, cb, user_data));
    }
    const tryvox_options *get() const noexcept { return p_; }

  private:
    options &set(int rc) {
        detail::check(rc);
        return *this;
    }
    tryvox_options *p_;
};

/**
 * A snapshot of a client's statistics: the C tryvox_stats (every field of tryvox.h, e.g.
 * `attempts`, `retries_server_error`, `in_flight`, `latency_p99_us`), zeroed and with
 * `size` set on construction. Counters only grow over the client's life (diff two
 * snapshots for a window); `in_flight` and `connections_open` are gauges.
 */
struct stats : tryvox_stats {
    stats() noexcept : tryvox_stats() { size = sizeof(tryvox_stats); }

    /** Finished hangups whose final status is `s` (0 for a number the library lacks). */
    std::uint64_t hangups(status s) const noexcept {
        const std::size_t i = static_cast<std::size_t>(static_cast<int>(s));
        return i < sizeof(hangups_by_status) / sizeof(hangups_by_status[0]) ? hangups_by_status[i] : 0;
    }
    /** Finished hangups, whatever their status. */
    std::uint64_t hangups() const noexcept {
        std::uint64_t n = 0;
        for (std::uint64_t v : hangups_by_status) n += v;
        return n;
    }
    /** Retries for any cause. */
    std::uint64_t retries() const noexcept {
        return retries_connection + retries_rate_limited + retries_server_error;
    }
    /** Latencies of whole hangups (percentiles are upper bucket edges; 0 before the first). */
    std::chrono::microseconds latency_p50() const noexcept { return us(latency_p50_us); }
    std::chrono::microseconds latency_p90() const noexcept { return us(latency_p90_us); }
    std::chrono::microseconds latency_p99() const noexcept { return us(latency_p99_us); }
    std::chrono::microseconds latency_max() const noexcept { return us(latency_max_us); }

  private:
    static std::chrono::microseconds us(std::uint64_t v) noexcept {
        typedef std::chrono::microseconds::rep rep;
        const std::uint64_t top = static_cast<std::uint64_t>(std::chrono::microseconds::max().count());
        return std::chrono::microseconds(static_cast<rep>(v < top ? v : top));
    }
};

/** One async outcome, as the callback receives it. */
struct outcome {
    std::string call_uuid;
    std::error_code ec;
    int http_status;
    std::string message;
};

/** A TryVox client. Safe to share between threads (by reference). */
class client {
  public:
    client(const std::string &auth_id, const std::string &api_key)
        : p_(tryvox_client_new(auth_id.c_str(), api_key.c_str())) {
        if (!p_) detail::check(TRYVOX_INVALID_ARGUMENT);
    }
    client(const std::string &auth_id, const std::string &api_key, const options &o)
        : p_(tryvox_client_new_with_options(auth_id.c_str(), api_key.c_str(), o.get())) {
        if (!p_) detail::check(TRYVOX_INVALID_ARGUMENT);
    }

    /** Hangs up; throws tryvox::error unless the call was ended. Returns the HTTP status. */
    int hangup(const std::string &call_uuid) {
        detail::check(tryvox_hangup(p_.get(), call_uuid.c_str()));
        return tryvox_last_http_status();
    }

    /** Hangs up without throwing; ec is cleared on success. */
    void hangup(const std::string &call_uuid, std::error_code &ec) noexcept {
        ec = make_error_code(static_cast<status>(tryvox_hangup(p_.get(), call_uuid.c_str())));
        if (ec.value() == TRYVOX_OK) ec.clear();
    }

    /**
     * Queues a hangup; `done` runs once on a library thread. Throws tryvox::error if the
     * request is refused (then `done` never runs). Exceptions must not escape `done`.
     */
    void hangup_async(const std::string &call_uuid, std::function<void(const outcome &)> done) {
        std::unique_ptr<std::function<void(const outcome &)>> f(
            new std::function<void(const outcome &)>(std::move(done)));
        detail::check(tryvox_hangup_async(p_.get(), call_uuid.c_str(), &trampoline, f.get()));
        f.release();  // owned by the pending callback now
    }

    /** Hangs up every id (at most max_parallel at once, 0 = default); one status each. */
    std::vector<status> hangup_many(const std::vector<std::string> &ids, std::uint32_t max_parallel = 0) {
        std::vector<const char *> ptrs;
        ptrs.reserve(ids.size());
        for (const auto &id : ids) ptrs.push_back(id.c_str());
        std::vector<int> out(ids.size(), TRYVOX_INTERNAL_ERROR);
        detail::check(tryvox_hangup_many(p_.get(), ptrs.data(), ptrs.size(), out.data(), max_parallel));
        std::vector<status> result;
        result.reserve(out.size());
        for (int s : out) result.push_back(static_cast<status>(s));
        return result;
    }

    /**
     * The client's statistics now (tryvox_client_stats). Takes no lock: call it from any
     * thread, as often as wanted, while hangups run. Throws tryvox::error only for a
     * moved-from client.
     */
    tryvox::stats stats() const {
        tryvox::stats s;
        detail::check(tryvox_client_stats(p_.get(), &s));
        return s;
    }

    /** As stats(), without throwing; ec is cleared on success. */
    tryvox::stats stats(std::error_code &ec) const noexcept {
        tryvox::stats s;
        const int rc = tryvox_client_stats(p_.get(), &s);
        ec = make_error_code(static_cast<status>(rc));
        if (rc == TRYVOX_OK) ec.clear();
        return s;
    }

    tryvox_client *get() const noexcept { return p_.get(); }

  private:
    static void trampoline(void *user_data, const char *call_uuid, int st, int http_status,
                           const char *message) {
        std::unique_ptr<std::function<void(const outcome &)>> f(
            static_cast<std::function<void(const outcome &)> *>(user_data));
        outcome o{call_uuid, make_error_code(static_cast<status>(st)), http_status, message};
        if (st == TRYVOX_OK) o.ec.clear();
        try {
            (*f)(o);
        } catch (...) {
            // Never let an exception unwind into the C library's thread.
        }
    }
    struct deleter {
        void operator()(tryvox_client *c) const noexcept { tryvox_client_free(c); }
    };
    std::unique_ptr<tryvox_client, deleter> p_;
};

}  // namespace tryvox

namespace std {
template <>
struct is_error_code_enum<tryvox::status> : true_type {};
}  // namespace std

#endif /* TRYVOX_HPP */
