-- PDUs of a /send transaction that could not be judged (the state at a gap in the DAG could not be
-- fetched: a partition, a restarting sender). Their sender got a per-PDU error and will not send them
-- again, so they are tried again through the intake (rooms.deferred_pdus), across restarts. Bounded by
-- the server (at most MAX_WAITING rows); a row leaves when its event is judged or its tries run out.
CREATE TABLE deferred_pdus (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    pdu_json TEXT NOT NULL,
    tries INTEGER NOT NULL,
    next_try_ts BIGINT NOT NULL
);
CREATE INDEX deferred_pdus_by_next_try ON deferred_pdus (next_try_ts);
