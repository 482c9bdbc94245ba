-- wrk script: POST the signed GitHub push payload with a distinct X-GitHub-Delivery per request.
-- BENCH_BODY (file) and BENCH_SIGNATURE (sha256=...) come from bench/run.
local counter = 0
local prefix = ""
local body

function setup(thread)
  thread:set("prefix", string.format("%08x", math.random(0, 0x7fffffff)))
end

function init(args)
  local f = assert(io.open(os.getenv("BENCH_BODY"), "rb"))
  body = f:read("*a")
  f:close()
  wrk.method = "POST"
  wrk.body = body
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-GitHub-Event"] = "push"
  wrk.headers["X-Hub-Signature-256"] = os.getenv("BENCH_SIGNATURE")
end

function request()
  counter = counter + 1
  wrk.headers["X-GitHub-Delivery"] = prefix .. "-" .. counter
  return wrk.format(nil, os.getenv("BENCH_PATH") or "/hooks/github")
end

function done(summary, latency, requests)
  local codes = summary.errors
  io.write(string.format("p50=%.2fms p99=%.2fms non2xx=%d\n",
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, codes.status))
end
