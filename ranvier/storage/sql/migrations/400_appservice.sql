-- Application services: events queued for each appservice in the transaction that persists them, and the
-- transactions built from the queue. A queued row leaves the queue only when it is put into a transaction
-- (in one database transaction), and a transaction row leaves only when the appservice accepted it, so
-- nothing is lost across a crash; a transaction's id and body are fixed once written, so a retry after a
-- restart sends the same contents under the same id.
CREATE TABLE appservice_queue (
    as_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    queued_ts BIGINT NOT NULL,
    PRIMARY KEY (as_id, seq)
);
CREATE UNIQUE INDEX appservice_queue_unique_event ON appservice_queue (as_id, event_id);

-- Ephemeral data (typing, receipts) for appservices with receive_ephemeral; content is the EDU as pushed.
CREATE TABLE appservice_ephemeral (
    as_id TEXT NOT NULL,
    seq BIGINT NOT NULL,
    content TEXT NOT NULL,
    queued_ts BIGINT NOT NULL,
    PRIMARY KEY (as_id, seq)
);

-- body: the transaction's JSON exactly as sent (events in client format, ephemeral data).
CREATE TABLE appservice_txns (
    as_id TEXT NOT NULL,
    txn_id BIGINT NOT NULL,
    body TEXT NOT NULL,
    event_count INTEGER NOT NULL,
    oldest_ts BIGINT NOT NULL,
    PRIMARY KEY (as_id, txn_id)
);

-- The last transaction id used per appservice; ids are never reused, even after the row is gone.
CREATE TABLE appservice_txn_ids (
    as_id TEXT PRIMARY KEY,
    last_txn_id BIGINT NOT NULL
);

INSERT INTO aux_stream_positions (name, pos) VALUES ('appservice', 0);
