-- wrk script for restock-service. Each thread owns its own range of seeded orders, so no
-- request repeats an order. Environment:
--   MODE   post (POST /restocks) or get (GET /restocks/{order_no})
--   START  first order number of thread 0;  SPAN  orders per thread
--   ORDERS for get: a file of restored order numbers, one per line
--   BATCH  orders per POST (default 1);     OUT   where done() writes its JSON summary
--   AUTH   optional bearer key

local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

local mode, batch, base, span, counter, headers, restored

local function order_no(n)
  return string.format("354396-20260525-%010d", n)
end

function init(args)
  mode = os.getenv("MODE") or "post"
  batch = tonumber(os.getenv("BATCH") or "1")
  span = tonumber(os.getenv("SPAN"))
  base = tonumber(os.getenv("START") or "1") + tid * (span or 0)
  counter = 0
  headers = {["Content-Type"] = "application/json"}
  if mode == "get" then
    restored = {}
    for line in io.lines(os.getenv("ORDERS")) do restored[#restored + 1] = line end
    counter = tid * 7919  -- threads start at different places in the list
  end
  local key = os.getenv("AUTH")
  if key and key ~= "" then headers["Authorization"] = "Bearer " .. key end
end

function request()
  if mode == "get" then
    counter = counter + 1
    return wrk.format("GET", "/restocks/" .. restored[counter % #restored + 1], headers)
  end
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
  local out = io.open(os.getenv("OUT"), "w")
  out:write(string.format(
    '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d}, "latency_us": {"mean": %.1f, ' ..
    '"p50": %d, "p99": %d, "max": %d}}',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
  out:close()
end
