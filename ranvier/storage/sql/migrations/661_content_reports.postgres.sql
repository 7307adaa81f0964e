-- Reports by users (CS "Reporting content": an event, a room, a user), read by admins through
-- /_synapse/admin/v1/event_reports. kind is 'event', 'room' or 'user'.
CREATE TABLE content_reports (
    id BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    room_id TEXT,
    event_id TEXT,
    target_user_id TEXT,
    user_id TEXT NOT NULL,
    reason TEXT,
    content TEXT NOT NULL
);
CREATE INDEX content_reports_by_kind ON content_reports (kind, id);
