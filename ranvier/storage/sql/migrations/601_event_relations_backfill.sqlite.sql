-- The relations of the events stored before 600, with the rules of ranvier.protocol.relations.relation_of:
-- string event_id (1..255 characters, starting with '$') and rel_type (1..255), and for m.annotation a
-- string key; no NUL characters.
INSERT INTO event_relations (event_id, room_id, relates_to_id, rel_type, aggregation_key)
SELECT event_id, room_id, parent, rel_type, CASE WHEN rel_type = 'm.annotation' THEN akey END
FROM (
    SELECT event_id, room_id,
        json_type(json, '$.content."m.relates_to".event_id') AS parent_t,
        json_extract(json, '$.content."m.relates_to".event_id') AS parent,
        json_type(json, '$.content."m.relates_to".rel_type') AS rel_t,
        json_extract(json, '$.content."m.relates_to".rel_type') AS rel_type,
        json_type(json, '$.content."m.relates_to".key') AS key_t,
        json_extract(json, '$.content."m.relates_to".key') AS akey,
        -- json_extract stops a string at a NUL; the object's JSON text still shows it escaped
        instr(json_extract(json, '$.content."m.relates_to"'), '\u0000') AS nul
    FROM events WHERE json LIKE '%m.relates_to%'
) x
WHERE parent_t = 'text' AND rel_t = 'text'
    AND length(parent) BETWEEN 1 AND 255 AND length(rel_type) BETWEEN 1 AND 255
    AND substr(parent, 1, 1) = '$' AND nul = 0
    AND (rel_type != 'm.annotation' OR (key_t = 'text' AND length(akey) BETWEEN 1 AND 65536))
ON CONFLICT DO NOTHING;
