-- Add a group of outbox rows to Redis, each unless its event was added
-- already: for each row the check, the add and the record of it are one
-- atomic step (the whole script is), so a row sent again after a crash or
-- a lost reply is not added a second time.
--
-- KEYS     two per row: the stream or list (the row's topic), then the
--          event's dedup record
-- ARGV[1]  dedup window in seconds; 0 turns dedup off
-- ARGV[2]  'stream' or 'list'
-- ARGV[3]  stream: approximate MAXLEN, 0 for none
-- ARGV[4…] per row: how many values follow, then the values (stream: the
--          entry's field/value pairs; list: the envelope)
--
-- Returns one reply per row: 1 added, 0 added already, or the error Redis
-- gave the add (as text: "WRONGTYPE …"). The add comes before the record,
-- so an add Redis refuses (WRONGTYPE, OOM) records nothing and a later
-- retry is not mistaken for a duplicate.
local window = tonumber(ARGV[1])
local stream = ARGV[2] == 'stream'
local maxlen = tonumber(ARGV[3])
local replies = {}
local at = 4
for row = 1, #KEYS / 2 do
    local target, record = KEYS[2 * row - 1], KEYS[2 * row]
    local first = at + 1
    local last = at + tonumber(ARGV[at])
    at = last + 1
    if window > 0 and redis.call('EXISTS', record) == 1 then
        replies[row] = 0
    else
        local added
        if not stream then
            added = redis.pcall('LPUSH', target, ARGV[first])
        elseif maxlen > 0 then
            added = redis.pcall('XADD', target, 'MAXLEN', '~', maxlen, '*', unpack(ARGV, first, last))
        else
            added = redis.pcall('XADD', target, '*', unpack(ARGV, first, last))
        end
        if type(added) == 'table' and added.err then
            replies[row] = added.err
        else
            if window > 0 then
                redis.call('SET', record, '1', 'EX', window)
            end
            replies[row] = 1
        end
    end
end
return replies
