-- The full-text index of CS "Server Side Search" (room_events): the searched key of each live
-- m.room.message (content.body), m.room.name (content.name) and m.room.topic (content.topic, and the
-- text/plain body of content."m.topic" where it says more) event. FTS5 with the Porter stemmer; the
-- rowid is the event's stream ordering (unique, and fixed once the event is in the timeline). Rows are
-- written as events are persisted and deleted when an event is redacted (ranvier/storage/sql/search.py).
-- Existing events are indexed here; for topics only content.topic, the persister adds m.topic.
CREATE VIRTUAL TABLE event_search USING fts5(value, tokenize = 'porter unicode61 remove_diacritics 2');
INSERT INTO event_search (rowid, value)
SELECT stream_ordering, json_extract(json, CASE type
        WHEN 'm.room.message' THEN '$.content.body'
        WHEN 'm.room.name' THEN '$.content.name'
        ELSE '$.content.topic' END)
FROM events
WHERE type IN ('m.room.message', 'm.room.name', 'm.room.topic')
  AND outlier = FALSE AND rejected_reason IS NULL AND soft_failed = FALSE AND redacted_by IS NULL
  AND json_type(json, CASE type
        WHEN 'm.room.message' THEN '$.content.body'
        WHEN 'm.room.name' THEN '$.content.name'
        ELSE '$.content.topic' END) = 'text';
