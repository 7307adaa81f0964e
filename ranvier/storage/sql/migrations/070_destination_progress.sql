-- The newest of our events each destination has acknowledged (the admin API's
-- last_successful_stream_ordering), written in the transaction that removes the acknowledged rows from
-- the outbox.
CREATE TABLE destination_progress (
    destination TEXT PRIMARY KEY,
    last_successful_stream_ordering BIGINT NOT NULL,
    last_success_ts BIGINT NOT NULL
);

-- The same per room: the newest of our events in the room that the destination acknowledged (the admin
-- API's per-room stream_ordering of /destinations/{destination}/rooms).
CREATE TABLE destination_room_progress (
    destination TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (destination, room_id)
);
