-- `migrate --adopt`: an enqueue function for the adopted table, taking the
-- columns the layout reads, in the caller's transaction.
CREATE OR REPLACE FUNCTION {{enqueue_function}}({{parameters}})
RETURNS {{event_id_type}}
LANGUAGE sql
AS $$
    INSERT INTO {{table}} ({{columns}})
    VALUES ({{arguments}})
    RETURNING {{event_id_column}}
$$
