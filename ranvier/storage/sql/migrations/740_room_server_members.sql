-- Per room and server, how many of the server's users are joined and how many invited (issue 19: the work
-- of a join must not grow with the room). Kept in the same transaction as room_memberships by
-- storage/sql/state.py (write_current_state: every join, leave, kick, ban, invite, state reset and
-- partial-state resync goes through it); purge_room deletes it with the room's other room_id tables. Its
-- readers (the joined servers of a room, whether a server is joined, the member counts) read one row per
-- server instead of scanning the room's membership index, one entry per member. A row whose two counts
-- are zero is deleted.
CREATE TABLE room_server_members (
    room_id TEXT NOT NULL,
    server_name TEXT NOT NULL,
    joined BIGINT NOT NULL,
    invited BIGINT NOT NULL,
    PRIMARY KEY (room_id, server_name)
) WITHOUT ROWID;
INSERT INTO room_server_members (room_id, server_name, joined, invited)
    SELECT room_id, server_name, SUM(CASE WHEN membership = 'join' THEN 1 ELSE 0 END),
        SUM(CASE WHEN membership = 'invite' THEN 1 ELSE 0 END)
    FROM room_memberships WHERE membership IN ('join', 'invite') GROUP BY room_id, server_name;
