-- Presence (CS "Presence", S2S "Presence"): the latest state of each user we know of, local or remote.
-- stream_pos orders changes for /sync and the appservice feed (the 'presence' aux stream); a row is
-- rewritten with a new position whenever its state is worth telling others about.
-- last_federation_update_ts: for a remote user, when its server last told us; for a local user, when we
-- last sent the state to other servers (the periodic resend).
CREATE TABLE presence_state (
    user_id TEXT NOT NULL PRIMARY KEY,
    state TEXT NOT NULL,
    status_msg TEXT,
    last_active_ts BIGINT NOT NULL,
    last_federation_update_ts BIGINT NOT NULL,
    currently_active BOOLEAN NOT NULL,
    stream_pos BIGINT NOT NULL
);
CREATE INDEX presence_state_by_pos ON presence_state (stream_pos);
INSERT INTO aux_stream_positions (name, pos) VALUES ('presence', 0);
