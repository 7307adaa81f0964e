-- Synapse-compatible admin API (ranvier.admin): per-user moderation flags, blocked rooms and
-- registration tokens.

-- Shadow-banned users (Synapse's /_synapse/admin/v1/users/{userId}/shadow_ban): their requests that would
-- send something to others succeed without anything being sent.
CREATE TABLE shadow_banned_users (
    user_id TEXT PRIMARY KEY,
    banned_ts BIGINT NOT NULL
);

-- Per-user message rate limit overrides (/_synapse/admin/v1/users/{userId}/override_ratelimit);
-- messages_per_second 0 means not limited at all, as in Synapse.
CREATE TABLE ratelimit_overrides (
    user_id TEXT PRIMARY KEY,
    messages_per_second BIGINT NOT NULL,
    burst_count BIGINT NOT NULL
);

-- Rooms blocked by an admin (/_synapse/admin/v1/rooms/{roomId}/block, or a room deletion with block):
-- local users can no longer join them.
CREATE TABLE blocked_rooms (
    room_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    blocked_ts BIGINT NOT NULL
);

-- Registration tokens (/_synapse/admin/v1/registration_tokens and m.login.registration_token).
CREATE TABLE registration_tokens (
    token TEXT PRIMARY KEY,
    uses_allowed BIGINT,
    pending BIGINT NOT NULL,
    completed BIGINT NOT NULL,
    expiry_time BIGINT
);

-- Each user's server notices room (/_synapse/admin/v1/send_server_notice), created on the first notice.
CREATE TABLE server_notice_rooms (
    user_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL
);
