-- The full-text index of CS "Server Side Search" (room_events): the searched key of each live
-- m.room.message (content.body), m.room.name (content.name) and m.room.topic (content.topic, and the
-- text/plain body of content."m.topic" where it says more) event, as an 'english' tsvector (stemmed,
-- stop words dropped) under a GIN index. Rows are written as events are persisted and deleted when an
-- event is redacted (ranvier/storage/sql/search.py). Existing events are indexed here; for topics only
-- content.topic, the persister adds m.topic.
CREATE TABLE event_search (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    value TEXT NOT NULL,
    vector tsvector NOT NULL
);
CREATE INDEX event_search_vector ON event_search USING GIN (vector);
CREATE INDEX event_search_stream ON event_search (stream_ordering);
-- jsonb refuses the \u0000 escape that a stored PDU may hold: such events are left out rather than
-- failing the migration (the CASE keeps the cast from being tried on them).
INSERT INTO event_search (event_id, room_id, stream_ordering, value, vector)
SELECT event_id, room_id, stream_ordering, value, to_tsvector('english', value)
FROM (
    SELECT event_id, room_id, stream_ordering, doc #>> path AS value, jsonb_typeof(doc #> path) AS kind
    FROM (
        SELECT event_id, room_id, stream_ordering,
            CASE WHEN strpos(json, '\u0000') = 0 THEN json::jsonb END AS doc,
            CASE type
                WHEN 'm.room.message' THEN '{content,body}'::text[]
                WHEN 'm.room.name' THEN '{content,name}'::text[]
                ELSE '{content,topic}'::text[] END AS path
        FROM events
        WHERE type IN ('m.room.message', 'm.room.name', 'm.room.topic')
          AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE AND redacted_by IS NULL
    ) AS e
) AS s
WHERE kind = 'string';
