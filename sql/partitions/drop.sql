-- Drop one partition past the retention, in its own transaction: lock it
-- first (briefly: lock_timeout, retried later), then make sure every row in
-- it is published, then drop it. A partition holding a pending or dead row
-- is left alone; DROP TABLE on a partition detaches it as well.
BEGIN;
SET LOCAL lock_timeout = '50ms';
LOCK TABLE {{partition}} IN ACCESS EXCLUSIVE MODE;
DO $$
BEGIN
    -- Pending and dead rows have partial indexes: no scan of the partition.
    IF EXISTS (SELECT 1 FROM {{partition}} WHERE status = 'pending' OR status = 'dead') THEN
        RAISE EXCEPTION 'partition still holds rows that are not published'
            USING ERRCODE = 'object_in_use';
    END IF;
END
$$;
DROP TABLE {{partition}};
COMMIT
