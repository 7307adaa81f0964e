-- The user directory (CS "User Directory"): a profile per user seen joined to a room, local or remote,
-- from their latest join event (a local user's own profile is read from users at search time), and the
-- rooms that count as public for it (join rule "public" or history "world_readable", as Synapse counts
-- them). Who may be found by whom is read from room_memberships when searching, so joins and leaves need
-- no bookkeeping here. search_text: ' ' + the lower-cased words of the user id and display name + ' ',
-- so that a word prefix matches with LIKE '% prefix%'. Kept by ranvier/storage/sql/user_directory.py.
CREATE TABLE user_directory (
    user_id TEXT PRIMARY KEY,
    display_name TEXT,
    avatar_url TEXT,
    search_text TEXT NOT NULL
);
CREATE TABLE user_directory_public_rooms (
    room_id TEXT PRIMARY KEY
);
-- jsonb refuses the \u0000 escape: such member events count as having no profile (the CASE keeps the
-- cast from being tried on them).
INSERT INTO user_directory (user_id, display_name, avatar_url, search_text)
SELECT user_id, display_name, avatar_url,
    ' ' || replace(replace(replace(replace(replace(lower(user_id || ' ' || COALESCE(display_name, '')),
        '@', ' '), ':', ' '), '.', ' '), '_', ' '), '-', ' ') || ' '
FROM (
    SELECT m.user_id,
        MAX(CASE WHEN jsonb_typeof(doc -> 'content' -> 'displayname') = 'string'
            THEN doc -> 'content' ->> 'displayname' END) AS display_name,
        MAX(CASE WHEN jsonb_typeof(doc -> 'content' -> 'avatar_url') = 'string'
            THEN doc -> 'content' ->> 'avatar_url' END) AS avatar_url
    FROM room_memberships m
    JOIN (SELECT event_id, CASE WHEN strpos(json, '\u0000') = 0 THEN json::jsonb END AS doc FROM events
          WHERE type = 'm.room.member') e ON e.event_id = m.event_id
    WHERE m.membership = 'join'
    GROUP BY m.user_id
) AS profiles;
INSERT INTO user_directory_public_rooms (room_id)
SELECT DISTINCT c.room_id FROM current_state c
JOIN (SELECT event_id, CASE WHEN strpos(json, '\u0000') = 0 THEN json::jsonb END AS doc FROM events
      WHERE type IN ('m.room.join_rules', 'm.room.history_visibility')) e ON e.event_id = c.event_id
WHERE (c.type = 'm.room.join_rules' AND c.state_key = '' AND e.doc -> 'content' ->> 'join_rule' = 'public')
   OR (c.type = 'm.room.history_visibility' AND c.state_key = ''
       AND e.doc -> 'content' ->> 'history_visibility' = 'world_readable');
