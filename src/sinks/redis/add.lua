-- Add one outbox row to Redis unless its event was added already: the
-- check, the add and the record of it are one atomic step, so a row sent
-- again after a crash or a lost reply is not added a second time.
--
-- KEYS[1]  the stream or list (the row's topic)
-- KEYS[2]  the event's dedup key
-- ARGV[1]  dedup window in seconds; 0 turns dedup off
-- ARGV[2]  'stream' or 'list'
-- ARGV[3]  stream: approximate MAXLEN, 0 for none
-- ARGV[4…] stream: the entry's field/value pairs; list: the envelope
--
-- Returns 1 when added, 0 when the event was added already. The add comes
-- before the record, so an add Redis refuses (WRONGTYPE, OOM) records
-- nothing and a later retry is not mistaken for a duplicate.
local window = tonumber(ARGV[1])
if window > 0 and redis.call('EXISTS', KEYS[2]) == 1 then
    return 0
end
if ARGV[2] == 'stream' then
    local maxlen = tonumber(ARGV[3])
    if maxlen > 0 then
        redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', unpack(ARGV, 4))
    else
        redis.call('XADD', KEYS[1], '*', unpack(ARGV, 4))
    end
else
    redis.call('LPUSH', KEYS[1], ARGV[4])
end
if window > 0 then
    redis.call('SET', KEYS[2], '1', 'EX', window)
end
return 1
