CREATE TABLE room_aliases (
    alias TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    creator TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX room_aliases_by_room ON room_aliases (room_id);

-- Rooms published in the public room directory; a room without a row is private.
CREATE TABLE room_directory (
    room_id TEXT PRIMARY KEY,
    visibility TEXT NOT NULL
);
