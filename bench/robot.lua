-- wrk script: signed robot callbacks, each with a fresh msgId.
--
-- Arguments (after "--"): run prefix, timestamp, sign, body head, body tail.
-- The sign covers only the timestamp, so bench/robot.py signs one timestamp
-- (valid for DingTalk's hour) and every request reuses it; the msgId between
-- head and tail is prefix-thread-counter, unique per request and per run.

local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_no", next_thread)
end

local counter = 0
local prefix, head, tail

function init(args)
  prefix, head, tail = args[1], args[4], args[5]
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json; charset=utf-8"
  wrk.headers["timestamp"] = args[2]
  wrk.headers["sign"] = args[3]
end

function request()
  counter = counter + 1
  local msg_id = prefix .. "-" .. tostring(thread_no) .. "-" .. tostring(counter)
  return wrk.format(nil, "/dingtalk/robot", nil, head .. msg_id .. tail)
end
