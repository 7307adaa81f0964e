-- Simplified sliding sync (MSC4186) connection positions, so a client's pos survives a restart: per
-- (user, device, conn_id), the positions kept (the one the last request came from and the one it answered
-- with), each the /sync token it was computed up to and, as JSON, what the connection had been sent of
-- each room (ranvier/sync/connections.py). last_used_ts drives expiry.
CREATE TABLE sliding_sync_positions (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    conn_id TEXT NOT NULL,
    position_id BIGINT NOT NULL,
    token TEXT NOT NULL,
    rooms TEXT NOT NULL,
    last_used_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, conn_id, position_id)
);
CREATE INDEX sliding_sync_positions_used ON sliding_sync_positions (last_used_ts);
