-- `migrate --adopt`, step 2: new rows take their sequence from a sequence
-- of their own. Catalog-only changes. Once this commits, every row without
-- a sequence value is older than every row with one.
CREATE SEQUENCE IF NOT EXISTS {{sequence_seq}} AS bigint;
ALTER SEQUENCE {{sequence_seq}} OWNED BY {{table}}.{{sequence}};
ALTER TABLE {{table}} ALTER COLUMN {{sequence}} SET DEFAULT nextval('{{sequence_seq_text}}')
