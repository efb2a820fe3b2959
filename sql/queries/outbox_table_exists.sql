-- NULL when the table named by $1 does not exist (or is not visible).
SELECT to_regclass($1::text)::text AS regclass
