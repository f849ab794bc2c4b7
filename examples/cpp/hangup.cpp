// C++ example and test: tryvox.hpp against the simulator.
// usage: hangup-cpp LIVE_ID LIVE_ID... (env TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID, TRYVOX_API_KEY)
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "tryvox.hpp"

static int failures = 0;
#define EXPECT(cond)                                                              \
    do {                                                                          \
        if (!(cond)) {                                                            \
            ++failures;                                                           \
            std::cerr << "FAIL line " << __LINE__ << ": " #cond << std::endl;     \
        }                                                                         \
    } while (0)

static std::string env(const char *name) {
    const char *v = std::getenv(name);
    return v ? v : "";
}

// Prints the statuses seen and the other fields of a stats snapshot.
static void print_stats(const tryvox::stats &st) {
    std::cout << "stats: " << st.hangups() << " hangups (";
    for (int i = 0; i < 32; ++i) {
        const auto s = static_cast<tryvox::status>(i);
        if (st.hangups(s)) std::cout << " " << make_error_code(s).message() << ": " << st.hangups(s);
    }
    std::cout << " ), " << st.attempts << " attempts, " << st.retries() << " retries, "
              << st.in_flight << " in flight, " << st.connections_open << " of "
              << st.connections_opened << " connections open, latency p50 "
              << st.latency_p50().count() << " us p90 " << st.latency_p90().count() << " us p99 "
              << st.latency_p99().count() << " us max " << st.latency_max().count() << " us\n";
}

int main(int argc, char **argv) {
    if (argc < 4) {
        std::cerr << "usage: " << argv[0] << " LIVE_ID LIVE_ID LIVE_ID...\n";
        return 2;
    }
    std::vector<std::string> ids(argv + 1, argv + argc);
    tryvox::options opts;
    opts.base_url(env("TRYVOX_BASE_URL")).user_agent("cpp-example/1.0").timeout_ms(5000);

    try {
        tryvox::options bad;
        bad.base_url("ftp://nope");
        EXPECT(false);
    } catch (const tryvox::error &e) {
        EXPECT(e.code() == tryvox::status::invalid_argument);
    }
    try {
        tryvox::options bad;
        bad.trust_store(static_cast<tryvox_trust_store>(7));
        EXPECT(false);
    } catch (const tryvox::error &e) {
        EXPECT(e.code() == tryvox::status::invalid_argument);
    }
    opts.trust_store(TRYVOX_TRUST_SYSTEM_OR_BUNDLED);

    tryvox::client c(env("TRYVOX_ACCOUNT_ID"), env("TRYVOX_API_KEY"), opts);
    EXPECT(c.stats().hangups() == 0);
    // Every outcome this program sees, by status, to compare with the client's stats.
    std::uint64_t seen_by_status[32] = {};
    auto saw = [&](std::error_code e) { ++seen_by_status[e ? e.value() : 0]; };
    EXPECT(c.hangup(ids[0]) == 204);
    saw(std::error_code());
    try {
        c.hangup(ids[0]);
        EXPECT(false);
    } catch (const tryvox::error &e) {
        saw(e.code());
        EXPECT(e.code() == tryvox::status::already_ended);
        EXPECT(e.http_status() == 404);
        EXPECT(e.server_code() == "call_already_ended");
        std::cout << "second hangup: " << e.code().message() << ": " << e.what() << "\n";
    }
    std::error_code ec;
    c.hangup("no-such-call", ec);
    saw(ec);
    EXPECT(ec == tryvox::status::not_found);
    EXPECT(tryvox::call_is_gone(ec));
    c.hangup("../x", ec);  // refused before sending, but a finished hangup all the same
    saw(ec);
    EXPECT(ec == tryvox::status::invalid_argument);

    // Bulk over all but the last id; async for the last one.
    std::vector<std::string> rest(ids.begin() + 1, ids.end() - 1);
    auto statuses = c.hangup_many(rest, 4);
    for (auto s : statuses) {
        saw(make_error_code(s));
        EXPECT(s == tryvox::status::ok);
    }
    std::atomic<int> called(0);
    std::mutex m;
    std::string seen;
    c.hangup_async(ids.back(), [&](const tryvox::outcome &o) {
        std::lock_guard<std::mutex> g(m);
        seen = o.call_uuid;
        saw(o.ec);
        if (!o.ec && o.http_status == 204) ++called;
    });
    // The client counts a hangup before its callback runs: once the callback has been
    // seen, the snapshot holds every outcome.
    for (int i = 0; i < 1000 && called == 0; ++i) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    {
        std::lock_guard<std::mutex> g(m);
        const tryvox::stats st = c.stats();
        print_stats(st);
        EXPECT(st.size == sizeof(tryvox_stats));
        std::uint64_t seen_total = 0, sent = 0;
        for (int i = 0; i < 32; ++i) {
            const auto s = static_cast<tryvox::status>(i);
            if (st.hangups(s) != seen_by_status[i]) {
                ++failures;
                std::cerr << "FAIL: stats count " << st.hangups(s) << " " << make_error_code(s).message()
                          << ", saw " << seen_by_status[i] << std::endl;
            }
            seen_total += seen_by_status[i];
            if (s != tryvox::status::invalid_argument) sent += seen_by_status[i];
        }
        EXPECT(st.hangups() == seen_total && seen_total == ids.size() + 3);
        EXPECT(st.hangups(tryvox::status::ok) == ids.size());
        EXPECT(st.attempts == sent + st.retries());  // nothing is sent for an invalid id
        EXPECT(st.in_flight == 0);
        EXPECT(st.connections_opened >= 1 && st.connections_open <= st.connections_opened);
        EXPECT(st.latency_p50().count() > 0 && st.latency_p50() <= st.latency_p90() &&
               st.latency_p90() <= st.latency_p99() && st.latency_max().count() > 0);
        std::error_code sec;
        EXPECT(c.stats(sec).hangups() == seen_total && !sec);
    }
    {
        tryvox::client moved(std::move(c));  // RAII: the destructor waits for the callback
    }
    EXPECT(called == 1);
    EXPECT(seen == ids.back());
    std::error_code moved_ec;
    c.stats(moved_ec);  // a moved-from client has no statistics
    EXPECT(moved_ec == tryvox::status::invalid_argument);
    std::cout << "C++ example: " << (failures ? "FAILED" : "ok") << std::endl;
    return failures ? 1 : 0;
}
