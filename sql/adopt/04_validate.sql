ALTER TABLE {{table}} VALIDATE CONSTRAINT "{{name}}_status_valid";
ALTER TABLE {{table}} VALIDATE CONSTRAINT "{{name}}_sequence_not_null"
