-- Who this database is, for `--exactly-once`'s default transactional.id:
-- the cluster's system identifier (kept by its physical replicas, so a
-- failover keeps the id) and the database's name.
SELECT system_identifier::text AS system_identifier,
       current_database()::text AS database
FROM pg_control_system()
