-- Stream positions for the auxiliary streams (account data, receipts, the federation outbox, ...).
-- Each stream is a single counter row; incrementing it inside the writing transaction gives positions
-- that are unique and ordered by commit on both engines (the row lock serialises writers on PostgreSQL).
CREATE TABLE aux_stream_positions (
    name TEXT PRIMARY KEY,
    pos BIGINT NOT NULL
);
INSERT INTO aux_stream_positions (name, pos) VALUES ('account_data', 0);
INSERT INTO aux_stream_positions (name, pos) VALUES ('receipts', 0);
INSERT INTO aux_stream_positions (name, pos) VALUES ('outbox', 0);
INSERT INTO aux_stream_positions (name, pos) VALUES ('pending_join_pdus', 0);
