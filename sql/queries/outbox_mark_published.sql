-- Mark rows published after their own delivery report succeeded.
-- statement_timestamp(), not now(): now() is when the claiming transaction
-- began, before the rows were even sent; this statement runs after the acks.
UPDATE {{table}}
SET status = 'published',
    published_at = statement_timestamp()
WHERE {{sequence}} = ANY($1::bigint[])
  AND status = 'pending'
