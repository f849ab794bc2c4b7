// C++ example and test: tryvox.hpp against the simulator.
// usage: hangup-cpp LIVE_ID LIVE_ID... (env TRYVOX_BASE_URL, TRYVOX_ACCOUNT_ID, TRYVOX_API_KEY)
#include <atomic>
#include <cstdlib>
#include <iostream>
#include <mutex>
#include <string>
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

    tryvox::client c(env("TRYVOX_ACCOUNT_ID"), env("TRYVOX_API_KEY"), opts);
    EXPECT(c.hangup(ids[0]) == 204);
    try {
        c.hangup(ids[0]);
        EXPECT(false);
    } catch (const tryvox::error &e) {
        EXPECT(e.code() == tryvox::status::already_ended);
        EXPECT(e.http_status() == 404);
        EXPECT(e.server_code() == "call_already_ended");
        std::cout << "second hangup: " << e.code().message() << ": " << e.what() << "\n";
    }
    std::error_code ec;
    c.hangup("no-such-call", ec);
    EXPECT(ec == tryvox::status::not_found);
    EXPECT(tryvox::call_is_gone(ec));
    c.hangup("../x", ec);
    EXPECT(ec == tryvox::status::invalid_argument);

    // Bulk over all but the last id; async for the last one.
    std::vector<std::string> rest(ids.begin() + 1, ids.end() - 1);
    auto statuses = c.hangup_many(rest, 4);
    for (auto s : statuses) EXPECT(s == tryvox::status::ok);
    std::atomic<int> called(0);
    std::mutex m;
    std::string seen;
    c.hangup_async(ids.back(), [&](const tryvox::outcome &o) {
        std::lock_guard<std::mutex> g(m);
        seen = o.call_uuid;
        if (!o.ec && o.http_status == 204) ++called;
    });
    {
        tryvox::client moved(std::move(c));  // RAII: the destructor waits for the callback
    }
    EXPECT(called == 1);
    EXPECT(seen == ids.back());
    std::cout << "C++ example: " << (failures ? "FAILED" : "ok") << std::endl;
    return failures ? 1 : 0;
}
