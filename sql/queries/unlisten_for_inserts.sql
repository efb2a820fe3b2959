-- Stop the wake-ups of a table the relay no longer serves.
UNLISTEN "{{notify_channel}}"
