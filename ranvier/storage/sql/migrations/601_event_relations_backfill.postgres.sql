-- The relations of the events stored before 600, with the rules of ranvier.protocol.relations.relation_of
-- (see the SQLite twin). PostgreSQL's json operators fail on a whole document holding the escape \u0000
-- (it cannot become text), so it is read with each one turned into U+FFFD, and a relation whose ids or
-- key then hold U+FFFD in a document that had a NUL is left out, as relation_of leaves out NULs.
INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, aggregation_key)
SELECT event_id, room_id, parent, rel_type, CASE WHEN rel_type = 'm.annotation' THEN akey END
FROM (
    SELECT event_id, room_id, had_nul,
        CASE WHEN json_typeof(rel -> 'event_id') = 'string' THEN rel ->> 'event_id' END AS parent,
        CASE WHEN json_typeof(rel -> 'rel_type') = 'string' THEN rel ->> 'rel_type' END AS rel_type,
        CASE WHEN json_typeof(rel -> 'key') = 'string' THEN rel ->> 'key' END AS akey
    FROM (
        SELECT event_id, room_id, strpos(json, '\u0000') > 0 AS had_nul,
            (replace(json, '\u0000', '\ufffd')::json) -> 'content' -> 'm.relates_to' AS rel
        FROM events WHERE json LIKE '%m.relates_to%'
    ) a
    WHERE json_typeof(rel) = 'object'
) x
WHERE parent IS NOT NULL AND rel_type IS NOT NULL
    AND length(parent) BETWEEN 1 AND 255 AND length(rel_type) BETWEEN 1 AND 255 AND left(parent, 1) = '$'
    AND (rel_type != 'm.annotation' OR length(akey) BETWEEN 1 AND 65536)
    AND NOT (had_nul AND (strpos(parent, U&'\FFFD') > 0 OR strpos(rel_type, U&'\FFFD') > 0
        OR (rel_type = 'm.annotation' AND strpos(akey, U&'\FFFD') > 0)))
ON CONFLICT DO NOTHING;
