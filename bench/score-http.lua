-- wrk script for bench/score.sh: POST /api/v1/score, cycling through the
-- files listed (one path per line) in $BODIES, with the key in $KEY.
-- Every thread loads the list once at start.
local bodies = {}
local list = assert(io.open(os.getenv("BODIES")))
for path in list:lines() do
  local f = io.open(path, "rb")
  if f then
    bodies[#bodies + 1] = f:read("*a")
    f:close()
  end
end
list:close()
local headers = {
  ["Content-Type"] = "message/rfc822",
  ["Authorization"] = "Bearer " .. os.getenv("KEY"),
}
local i = 0

request = function()
  i = i % #bodies + 1
  return wrk.format("POST", "/api/v1/score", headers, bodies[i])
end

done = function(summary, latency, requests)
  -- One JSON line for the benchmark table (latency in microseconds).
  io.write(string.format(
    '{"requests": %d, "seconds": %.3f, "requests_per_second": %.1f, "non_2xx": %d, "socket_errors": %d, "latency_ms": {"p50": %.3f, "p99": %.3f, "max": %.3f}}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.errors.status, summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency.max / 1000))
end
