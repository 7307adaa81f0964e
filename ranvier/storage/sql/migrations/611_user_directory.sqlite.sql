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
) WITHOUT ROWID;
INSERT INTO user_directory (user_id, display_name, avatar_url, search_text)
SELECT m.user_id, MAX(json_extract(e.json, '$.content.displayname')), MAX(json_extract(e.json, '$.content.avatar_url')),
    ' ' || replace(replace(replace(replace(replace(lower(m.user_id || ' ' || COALESCE(MAX(json_extract(e.json, '$.content.displayname')), '')),
        '@', ' '), ':', ' '), '.', ' '), '_', ' '), '-', ' ') || ' '
FROM room_memberships m JOIN events e ON e.event_id = m.event_id
WHERE m.membership = 'join'
GROUP BY m.user_id;
UPDATE user_directory SET display_name = NULL WHERE typeof(display_name) != 'text';
UPDATE user_directory SET avatar_url = NULL WHERE typeof(avatar_url) != 'text';
INSERT INTO user_directory_public_rooms (room_id)
SELECT DISTINCT c.room_id FROM current_state c JOIN events e ON e.event_id = c.event_id
WHERE (c.type = 'm.room.join_rules' AND c.state_key = '' AND json_extract(e.json, '$.content.join_rule') = 'public')
   OR (c.type = 'm.room.history_visibility' AND c.state_key = ''
       AND json_extract(e.json, '$.content.history_visibility') = 'world_readable');
