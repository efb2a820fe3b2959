-- Settings of the leader's dedicated session only (never a pooled one): the
-- server probes an idle client every second after 2 s of silence, so a leader
-- whose host vanished without closing its connection loses the lock within
-- about 5 s instead of the operating system's default of two hours.
SET tcp_keepalives_idle = 2;
SET tcp_keepalives_interval = 1;
SET tcp_keepalives_count = 3;
