-- `migrate` announces new and changed tables on this channel, so a relay
-- serving a pattern looks for new tables at once instead of at its next
-- discovery round.
LISTEN outbox_relay_tables
