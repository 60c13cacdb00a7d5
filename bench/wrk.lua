-- wrk script for `python -m bench.wrk`: each request is a signed Slack slash command of its own.
--
-- Arguments (after `--`): the path of a file of pre-signed requests, one per line as
-- "<timestamp>\t<v0=signature>\t<form body>", and optionally a delay in ms before each request
-- of a connection (pacing with wrk's delay() hook; 0: as fast as the answers come).
-- The Python side signs a fresh pool for every run (HMAC-SHA256 over "v0:<ts>:<body>", each body
-- with its own trigger_id); Slack accepts a timestamp within 5 minutes, so a pool signed just
-- before a run of seconds is what Slack itself could send. If the pool runs out, it starts over
-- and `wrapped` in the summary says so (the repeats would carry trigger ids already seen).
-- done() prints one line starting "WRKJSON " with the counts the bench reads.

local threads = {}
reqs = {}
n = 0
i = 0
wrapped = 0
pace = 0
in_ack = 0
busy = 0

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   pace = tonumber(args[2] or "0") or 0
   for line in io.lines(args[1]) do
      local ts, sig, body = line:match("^(%d+)\t(%S+)\t(.*)$")
      if ts then
         n = n + 1
         reqs[n] = wrk.format("POST", nil, {
            ["X-Slack-Request-Timestamp"] = ts,
            ["X-Slack-Signature"] = sig,
            ["Content-Type"] = "application/x-www-form-urlencoded",
         }, body)
      end
   end
end

function request()
   i = i + 1
   if i > n then
      i = 1
      wrapped = wrapped + 1
   end
   return reqs[i]
end

function delay()
   return pace
end

-- answers that came in the body of the ack (`help`, "busy"): nothing follows at the stand-in
function response(status, headers, body)
   if status == 200 and body and #body > 0 then
      in_ack = in_ack + 1
      if body:find("is busy", 1, true) then
         busy = busy + 1
      end
   end
end

function done(summary, latency, requests)
   local w, a, b = 0, 0, 0
   for _, t in ipairs(threads) do
      w = w + (t:get("wrapped") or 0)
      a = a + (t:get("in_ack") or 0)
      b = b + (t:get("busy") or 0)
   end
   local e = summary.errors
   io.write(string.format(
      'WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "connect": %d, "read": %d, ' ..
      '"write": %d, "timeout": %d, "p50_us": %d, "p99_us": %d, "max_us": %d, "wrapped": %d, "in_ack": %d, "busy_ack": %d}\n',
      summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max, w, a, b))
end
