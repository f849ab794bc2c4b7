-- wrk: DELETE {path}{prefix}{n} with a counter per thread, the same request as the clients.
local counter = 0
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end
function request()
  counter = counter + 1
  local id = os.getenv("WRK_PREFIX") .. tid .. "-" .. counter
  return wrk.format("DELETE", "/v1/voice/accounts/AC123456/calls/" .. id,
    { ["Authorization"] = "Bearer tvx_sk_test_simulator" })
end
