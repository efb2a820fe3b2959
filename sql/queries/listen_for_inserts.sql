-- Subscribe to the optional trigger's wake-ups (sql/optional/notify_trigger.sql).
LISTEN "{{notify_channel}}"
