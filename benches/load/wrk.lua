-- wrk script for benches/load/run.sh: POSTs one fixed request and prints one machine-readable
-- result line. It counts the requests it actually wrote (per thread, summed in done()), so the
-- number of calls made is exact even when wrk stops with requests in flight.
--
-- Environment:
--   WRK_PATH     request path                         (default /v1/chat/completions)
--   WRK_BODY     request body (JSON)                  (default: a small non-streaming chat)
--   WRK_HEADERS  extra headers, "Name: value|Name: value"
--   WRK_TAG      label echoed in the result line
--
-- Output (one line, latencies in microseconds):
--   WRKRESULT tag=.. sent=.. requests=.. secs=.. rps=.. p50_us=.. p90_us=.. p99_us=.. p999_us=..
--             max_us=.. mean_us=.. err_connect=.. err_read=.. err_write=.. err_status=.. err_timeout=..

local path = os.getenv("WRK_PATH") or "/v1/chat/completions"
local body = os.getenv("WRK_BODY") or
  '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello in one short sentence."}],"max_tokens":16}'
local tag = os.getenv("WRK_TAG") or "run"

wrk.method = "POST"
wrk.path = path
wrk.body = body
wrk.headers["Content-Type"] = "application/json"
local extra = os.getenv("WRK_HEADERS") or ""
for pair in string.gmatch(extra, "[^|]+") do
  local k, v = string.match(pair, "^%s*([^:]+):%s*(.-)%s*$")
  if k then wrk.headers[k] = v end
end

-- Main state: remember the threads so done() can sum their counters.
local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

-- Thread state: the request bytes are built once; request() only counts.
local req = nil
sent = 0
function init(args)
  req = wrk.format()
end
function request()
  sent = sent + 1
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  local secs = summary.duration / 1e6
  local total_sent = 0
  for _, t in ipairs(threads) do
    total_sent = total_sent + (t:get("sent") or 0)
  end
  io.write(string.format(
    "WRKRESULT tag=%s sent=%d requests=%d secs=%.3f rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d " ..
    "max_us=%d mean_us=%.1f err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    tag, total_sent, summary.requests, secs, summary.requests / secs,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
