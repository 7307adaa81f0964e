-- Event relationships (CS "Forming relationships between events"): one row per event whose content has an
-- m.relates_to with a rel_type, written when the event is persisted (outliers and rejected events too: who
-- reads joins events and keeps the live, unredacted children). A redacted child keeps its row; readers
-- drop it through events.redacted_by, since a redaction removes the relationship.
CREATE TABLE event_relations (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    relates_to_id TEXT NOT NULL,
    rel_type TEXT NOT NULL,
    -- m.annotation's key (for M_DUPLICATE_ANNOTATION), NULL for other types
    aggregation_key TEXT
);
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, rel_type);
CREATE INDEX event_relations_room_type ON event_relations (room_id, rel_type);
