-- The current role, and which of the privileges in $2 it lacks on the table
-- named by $1 (quoted). Checked at start-up: PostgreSQL checks privileges
-- only when a statement runs, so a role without UPDATE would otherwise look
-- like an outage on every batch.
SELECT current_user::text AS role,
       array(
           SELECT p.privilege
           FROM unnest($2::text[]) WITH ORDINALITY AS p(privilege, n)
           WHERE NOT has_table_privilege($1::text::regclass, p.privilege)
           ORDER BY p.n
       ) AS missing
