-- Tell running relays that tables were created or changed ($1: the table,
-- for their logs); see listen_for_tables.sql. Delivered on commit.
SELECT pg_notify('outbox_relay_tables', $1::text)
