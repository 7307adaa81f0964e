-- Rooms, events and their DAG, state groups, current state and the membership index.
-- Written in the SQL that SQLite and PostgreSQL both accept. Statements end with ';' at the end of a line.
-- Small tables looked up by their whole primary key are WITHOUT ROWID on SQLite (the runner drops the
-- clause for PostgreSQL): the key is stored once instead of in the table and again in its index.

CREATE TABLE rooms (
    room_id TEXT PRIMARY KEY,
    room_version TEXT NOT NULL,
    creator TEXT NOT NULL,
    is_public BOOLEAN NOT NULL DEFAULT FALSE,
    -- joined over federation with only part of the state ("faster joins"); the room layer clears it
    partial_state BOOLEAN NOT NULL DEFAULT FALSE
);

-- Every event we hold, outliers and rejected ones included. json is the PDU exactly as received; redactions
-- are applied when reading, so the original stays available.
CREATE TABLE events (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL REFERENCES rooms (room_id),
    -- the order events were persisted in (sync); backfilled events get negative, decreasing values
    stream_ordering BIGINT NOT NULL UNIQUE,
    depth BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT,
    sender TEXT NOT NULL,
    -- content.membership of m.room.member events, so the membership index never parses JSON
    membership TEXT,
    origin_server_ts BIGINT NOT NULL,
    -- known without the state at it (e.g. from a join's auth chain): not part of the timeline
    outlier BOOLEAN NOT NULL,
    rejected_reason TEXT,
    -- passed auth at its own state but not against the current state: kept, never shown, never built on
    soft_failed BOOLEAN NOT NULL,
    -- the valid redaction of this event, applied on read
    redacted_by TEXT,
    room_version TEXT NOT NULL,
    -- state groups before and after the event (NULL for outliers)
    state_before_group BIGINT,
    state_after_group BIGINT,
    json TEXT NOT NULL
);
CREATE INDEX events_room_stream ON events (room_id, stream_ordering);
CREATE INDEX events_room_topo ON events (room_id, depth, stream_ordering);

-- prev_events: the DAG. prev_event_id may name an event we do not have.
CREATE TABLE event_edges (
    event_id TEXT NOT NULL,
    prev_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, prev_event_id)
) WITHOUT ROWID;
CREATE INDEX event_edges_prev ON event_edges (prev_event_id);

CREATE TABLE event_auth_edges (
    event_id TEXT NOT NULL,
    auth_event_id TEXT NOT NULL,
    PRIMARY KEY (event_id, auth_event_id)
) WITHOUT ROWID;

-- The live events (non-outlier, not rejected, not soft-failed) that no live event names as a prev event.
CREATE TABLE forward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;

-- Events named as prev events by accepted non-outlier events, that we do not hold as non-outliers.
CREATE TABLE backward_extremities (
    room_id TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, event_id)
) WITHOUT ROWID;

-- Accepted redaction events and what they target (the target may arrive later).
CREATE TABLE redactions (
    event_id TEXT PRIMARY KEY,
    redacts TEXT NOT NULL,
    -- the room layer found the sender's power level sufficient (room v3+, where auth no longer checks it)
    permitted_by_power BOOLEAN NOT NULL
);
CREATE INDEX redactions_redacts ON redactions (redacts);

-- A state group is a full state map: a snapshot (prev_group NULL, depth 0) or a delta on prev_group, an
-- ancestor chosen so that chains stay logarithmic (see state_groups.py); depth counts the links from the
-- snapshot along the groups each was built from.
CREATE TABLE state_groups (
    group_id BIGINT PRIMARY KEY,
    room_id TEXT NOT NULL,
    prev_group BIGINT,
    depth BIGINT NOT NULL
);

-- A snapshot's entries, or a delta's changes; event_id NULL in a delta removes the key.
CREATE TABLE state_group_entries (
    group_id BIGINT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (group_id, type, state_key)
) WITHOUT ROWID;

CREATE TABLE current_state (
    room_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state_key TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, type, state_key)
) WITHOUT ROWID;

-- The m.room.member part of current_state, with each membership spelled out.
CREATE TABLE room_memberships (
    room_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    server_name TEXT NOT NULL,
    membership TEXT NOT NULL,
    event_id TEXT NOT NULL,
    PRIMARY KEY (room_id, user_id)
) WITHOUT ROWID;
CREATE INDEX room_memberships_user ON room_memberships (user_id);
CREATE INDEX room_memberships_joined ON room_memberships (room_id, membership, server_name);
