-- Mark rows published after their own delivery report succeeded.
UPDATE {{table}}
SET status = 'published',
    published_at = now()
WHERE id = ANY($1::bigint[])
  AND status = 'pending'
