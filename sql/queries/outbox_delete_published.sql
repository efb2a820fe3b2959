-- `--on-publish delete`: remove rows after their own delivery report
-- succeeded, in the transaction that claimed them, instead of marking them.
-- No published row is kept, so no retention and no dead tuples of marked
-- rows piling up; dead rows stay for an operator.
DELETE FROM {{table}}
WHERE {{sequence}} = ANY($1::bigint[])
  AND status = 'pending'
