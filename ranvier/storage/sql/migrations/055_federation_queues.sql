-- The durable outbound federation queue. A row leaves only when the destination acknowledged the
-- transaction that carried it, so a crash between enqueue and send never drops anything.
CREATE TABLE outbox_pdus (
    destination TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT,
    PRIMARY KEY (destination, seq)
);
CREATE UNIQUE INDEX outbox_pdus_unique_event ON outbox_pdus (destination, event_id);

-- coalesce_key: an EDU that supersedes earlier ones with the same (type, key), e.g. typing in a room.
CREATE TABLE outbox_edus (
    destination TEXT NOT NULL,
    seq BIGINT NOT NULL,
    edu_type TEXT NOT NULL,
    content TEXT NOT NULL,
    coalesce_key TEXT,
    PRIMARY KEY (destination, seq)
);
CREATE INDEX outbox_edus_by_key ON outbox_edus (destination, edu_type, coalesce_key);

CREATE TABLE destination_retry (
    destination TEXT PRIMARY KEY,
    retry_last_ts BIGINT NOT NULL,
    retry_interval BIGINT NOT NULL,
    failure_count INTEGER NOT NULL
);

-- Responses to inbound /send transactions, so that a retried transaction is answered identically
-- without being processed twice.
CREATE TABLE inbound_txns (
    origin TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    response TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
CREATE INDEX inbound_txns_by_ts ON inbound_txns (received_ts);

-- PDUs that arrived for a room while our join to it was still in progress; replayed in arrival order.
CREATE TABLE pending_join_pdus (
    seq BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    origin TEXT NOT NULL,
    pdu_json TEXT NOT NULL,
    received_ts BIGINT NOT NULL
);
CREATE INDEX pending_join_pdus_by_room ON pending_join_pdus (room_id, seq);
