-- wrk script: encrypted event callbacks read from a file bench/events.py wrote.
--
-- Argument (after "--"): the file, one request a line: "<path?query>\t<body>".
-- Each wrk thread takes every n-th line from its own offset, so no two
-- requests share a line until the file runs out (then it starts over).

local next_thread = 0

function setup(thread)
  next_thread = next_thread + 1
  thread:set("thread_no", next_thread)
  thread:set("thread_count", 0)
end

local lines = {}
local index

function init(args)
  for line in io.lines(args[1]) do
    lines[#lines + 1] = line
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  index = thread_no
end

function request()
  local line = lines[(index - 1) % #lines + 1]
  index = index + 16
  local tab = string.find(line, "\t", 1, true)
  return wrk.format(nil, string.sub(line, 1, tab - 1), nil, string.sub(line, tab + 1))
end
