-- wrk script for restock-service. Each thread owns its own range of order numbers, so no
-- request repeats an order. Environment:
--   MODE   post        POST /restocks, BATCH seeded orders a request
--          get         GET /restocks/{order_no}, over the restored orders in ORDERS
--          sync        POST /sync-executions, one fresh order of 2 lines
--          sync_batch  POST /sync-executions/batch, BATCH fresh orders of 2 lines each
--          stock       GET /stock/{sku}, over random seeded skus
--   PREFIX order number prefix (post, sync, sync_batch): PREFIX .. %010d
--   START  first order number of thread 0;  SPAN  orders per thread
--   ORDERS for get: a file of restored order numbers, one per line
--   SKUS   for sync, sync_batch and stock: the seeded skus are SKU-1 .. SKU-<SKUS>
--   BATCH  orders per POST (default 1);     OUT   where done() writes its JSON summary
--   AUTH   optional bearer key
--   KEYED  1: each POST /restocks carries an Idempotency-Key of its own (its first order)
--
-- Every answer of 400 or more counts as wrk's `status` error. In the sync modes, where the
-- answer's exact shape matters, a Lua response() also counts as `unexpected` every answer
-- other than 201 (sync), or other than 200 with "recorded": BATCH in its counts
-- (sync_batch). The other modes define no response(), which would make wrk hand every
-- answer's headers and body to Lua, so that they measure as they always have.

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local mode, batch, base, span, counter, headers, restored, prefix, skus, keyed

unexpected = 0  -- a global, so that done() can read each thread's count

local function order_no(n)
  return prefix .. string.format("%010d", n)
end

-- Two distinct random seeded skus, quantities 1 and 2: the shape of pgbench_sync.sql.
local function execution(n)
  local a = math.random(1, skus)
  local b = (a + math.random(1, skus - 1) - 1) % skus + 1
  return '{"order_no":"' .. order_no(n) .. '","mall":"rakuten","items":[' ..
    '{"sku":"SKU-' .. a .. '","quantity":1},{"sku":"SKU-' .. b .. '","quantity":2}]}'
end

function init(args)
  mode = os.getenv("MODE") or "post"
  batch = tonumber(os.getenv("BATCH") or "1")
  span = tonumber(os.getenv("SPAN"))
  base = tonumber(os.getenv("START") or "1") + tid * (span or 0)
  prefix = os.getenv("PREFIX") or "354396-20260525-"
  skus = tonumber(os.getenv("SKUS") or "0")
  keyed = os.getenv("KEYED") == "1"
  counter = 0
  headers = {["Content-Type"] = "application/json"}
  math.randomseed(os.time() * 1000 + tid)
  if mode == "get" then
    restored = {}
    for line in io.lines(os.getenv("ORDERS")) do restored[#restored + 1] = line end
    counter = tid * 7919  -- threads start at different places in the list
  elseif mode == "sync" then
    function response(status, _, _)
      if status ~= 201 then unexpected = unexpected + 1 end
    end
  elseif mode == "sync_batch" then
    function response(status, _, body)
      local recorded = body and tonumber(string.match(body, '"recorded"%s*:%s*(%d+)'))
      if status ~= 200 or recorded ~= batch then unexpected = unexpected + 1 end
    end
  end
  local key = os.getenv("AUTH")
  if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end
end

function request()
  if mode == "get" then
    counter = counter + 1
    return wrk.format("GET", "/restocks/" .. restored[counter % #restored + 1], headers)
  elseif mode == "stock" then
    return wrk.format("GET", "/stock/SKU-" .. math.random(1, skus), headers)
  elseif mode == "sync" then
    local body = execution(base + counter)
    counter = counter + 1
    return wrk.format("POST", "/sync-executions", headers, body)
  elseif mode == "sync_batch" then
    local executions = {}
    for i = 1, batch do
      executions[i] = execution(base + counter)
      counter = counter + 1
    end
    local body = '{"executions":[' .. table.concat(executions, ",") .. "]}"
    return wrk.format("POST", "/sync-executions/batch", headers, body)
  end
  if keyed then headers["Idempotency-Key"] = "bench-" .. order_no(base + counter) end
  local orders = {}
  for i = 1, batch do
    orders[i] = '{"order_no":"' .. order_no(base + counter) .. '","mall_cancel_succeeded":true}'
    counter = counter + 1
  end
  local body = '{"mall":"rakuten","restore_stock":true,"orders":[' .. table.concat(orders, ",") .. "]}"
  return wrk.format("POST", "/restocks", headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local odd = 0
  for _, thread in ipairs(threads) do odd = odd + (thread:get("unexpected") or 0) end
  local out = io.open(os.getenv("OUT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "unexpected": %d}, "latency_us": ' ..
    '{"mean": %.1f, "p50": %d, "p99": %d, "max": %d}}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout, odd,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
  out:close()
end
