-- The position of an event in a room's topological order (/messages), kept apart from its depth so that
-- events learnt late can be placed where they belong: events created in the make_join/send_join gap are
-- ordered just before the join that did not reference them. Normally (depth, stream_ordering * 1024);
-- the factor leaves room to place late events between two neighbours.
ALTER TABLE events ADD COLUMN topo_depth BIGINT;
ALTER TABLE events ADD COLUMN topo_order BIGINT;
UPDATE events SET topo_depth = depth, topo_order = stream_ordering * 1024;
CREATE INDEX events_room_topo_position ON events (room_id, topo_depth, topo_order);
