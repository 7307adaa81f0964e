-- What the push rules decided for each local user about each event they could see (CS "Push
-- Notifications"): one row per (user, event) that notifies or highlights. The counts in /sync are the
-- rows after the user's newest read receipt covering the row's thread (an unthreaded m.read or
-- m.read.private receipt covers every thread); thread_id is 'main' or the thread root's event id.
CREATE TABLE event_push_actions (
    user_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    stream_ordering BIGINT NOT NULL,
    event_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    notify INTEGER NOT NULL,
    highlight INTEGER NOT NULL,
    actions TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id, stream_ordering)
);
CREATE INDEX event_push_actions_by_user ON event_push_actions (user_id, stream_ordering);
