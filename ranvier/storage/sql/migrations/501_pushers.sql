-- Pushers (CS "Push Notifications" > "Pushers"): where a user's notifications are sent. A pusher is
-- (user, app_id, pushkey); last_stream_ordering is how far its deliveries have gone through that user's
-- event_push_actions (set to the stream's position when the pusher is created: no backlog).
CREATE TABLE pushers (
    user_id TEXT NOT NULL,
    app_id TEXT NOT NULL,
    pushkey TEXT NOT NULL,
    kind TEXT NOT NULL,
    app_display_name TEXT NOT NULL,
    device_display_name TEXT NOT NULL,
    profile_tag TEXT,
    lang TEXT NOT NULL,
    data TEXT NOT NULL,
    device_id TEXT,
    last_stream_ordering BIGINT NOT NULL,
    PRIMARY KEY (user_id, app_id, pushkey)
);
CREATE INDEX pushers_by_key ON pushers (app_id, pushkey);
