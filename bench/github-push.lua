-- wrk script: POST the signed GitHub push payload with a distinct X-GitHub-Delivery per request.
-- BENCH_BODY (file) and BENCH_SIGNATURE (sha256=...) come from bench/run.
-- `prefix` is a global: wrk's thread:set() writes globals, and a local of the same name would hide it (it did
-- until 2026-11-25, so both threads sent the same ids and half the requests were answered as duplicates).
local counter = 0
local body

function setup(thread)
  thread:set("prefix", string.format("%08x", math.random(0, 0x7fffffff)))
end

function init(args)
  -- Each thread has its own Lua state: seed it from its own prefix so the threads' GUIDs differ.
  math.randomseed(tonumber(prefix, 16) + os.time())
  local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
  body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "push"
  wrk.headers["X-Hub-Signature-256"] = os.getenv("BENCH_SIGNATURE")
end

-- A random GUID, as GitHub sends: the store's dedup index gets random keys, as it would in production.
local function guid()
  local r = math.random
  return string.format("%s-%04x-%04x-%04x-%04x%08x",
    prefix, r(0, 0xffff), r(0, 0xffff), r(0, 0xffff), r(0, 0xffff), r(0, 0x7fffffff))
end

function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = guid()
  return wrk.format(nil, os.getenv("BENCH_PATH") or "/hooks/github")
end

function done(summary, latency, requests)
  local codes = summary.errors
  io.write(string.format("p50=%.2fms p99=%.2fms non2xx=%d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, codes.status))
end
