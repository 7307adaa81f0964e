-- Partial-state ("faster") joins, joining side (MSC3706/MSC3902): one progress row per room joined with
-- members omitted, kept after completion (completed_ts set) for the operator's view.
--   join_event_id: our join, at which the full state is fetched;
--   state_ids_json: the full state at the join as a server answered /state_ids (kept so a restart does not
--     ask again), NULL until one answered;
--   attempts, last_error, last_attempt_ts, next_attempt_ts: the resync's retries (it never gives up);
--   completed_stream: the event stream position the completion took (a /sync without lazy-loading shows
--     the room from then on, with its full state).
CREATE TABLE partial_state_rooms (
    room_id TEXT PRIMARY KEY,
    join_event_id TEXT NOT NULL,
    joined_via TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    state_ids_json TEXT,
    attempts BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_attempt_ts BIGINT,
    next_attempt_ts BIGINT,
    completed_ts BIGINT,
    completed_stream BIGINT
);

-- The servers the resident said were in the room when we joined (send_join's servers_in_room): where the
-- resync asks for the state, and where our events go while the room's membership is not fully known.
CREATE TABLE partial_state_servers (
    room_id TEXT NOT NULL,
    server_name TEXT NOT NULL,
    PRIMARY KEY (room_id, server_name)
);
