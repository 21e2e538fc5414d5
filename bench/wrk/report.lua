-- wrk script for bench/run: the same request for every configuration, and a
-- machine-readable summary with p99.9 (wrk --latency prints only up to p99).
--
-- Environment: BENCH_COOKIE (session token, sent as tapgate_session),
-- BENCH_METHOD (default GET), BENCH_BODY (JSON body; sets Content-Type).
local cookie = os.getenv("BENCH_COOKIE")
local body = os.getenv("BENCH_BODY")
wrk.method = os.getenv("BENCH_METHOD") or "GET"
wrk.headers["Accept"] = "application/json"
wrk.headers["User-Agent"] = "tapgate-bench/wrk"
if cookie and cookie ~= "" then
  wrk.headers["Cookie"] = "theme=dark; tapgate_session=" .. cookie
end
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
