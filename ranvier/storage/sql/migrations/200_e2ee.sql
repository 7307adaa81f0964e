-- End-to-end encryption (CS "End-to-End Encryption", "Send-to-Device messaging"; S2S "Device Management").

-- The signed device keys a local device uploaded (one object per device, as uploaded).
CREATE TABLE e2e_device_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- One-time keys waiting to be claimed; a claimed key is deleted.
CREATE TABLE e2e_one_time_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- At most one fallback key per device and algorithm; used = 1 once it has been claimed.
CREATE TABLE e2e_fallback_keys (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    algorithm TEXT NOT NULL,
    key_id TEXT NOT NULL,
    key_json TEXT NOT NULL,
    used INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys (master, self_signing, user_signing) of local users and, as learnt over
-- federation, of remote ones.
CREATE TABLE e2e_cross_signing_keys (
    user_id TEXT NOT NULL,
    key_type TEXT NOT NULL,
    key_json TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded with /keys/signatures/upload, merged into the keys they sign when served.
-- target_key is a device id or a cross-signing public key (unpadded base64).
CREATE TABLE e2e_signatures (
    target_user_id TEXT NOT NULL,
    target_key TEXT NOT NULL,
    signer_user_id TEXT NOT NULL,
    signer_key_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key, signer_user_id, signer_key_id)
);

-- The device list stream: one row per change of a user's devices or cross-signing keys (local users, and
-- remote users whose updates we received). /sync and /keys/changes read it by position.
CREATE TABLE device_list_changes (
    stream_pos BIGINT PRIMARY KEY,
    user_id TEXT NOT NULL
);
CREATE INDEX device_list_changes_by_user ON device_list_changes (user_id, stream_pos);

-- The to-device inbox: messages for one local device, deleted once its client acknowledges a later
-- sync token.
CREATE TABLE to_device_inbox (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    stream_pos BIGINT NOT NULL,
    message_json TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, stream_pos)
);

-- sendToDevice transaction ids already handled, per sending device (idempotency).
CREATE TABLE to_device_txns (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- message_ids of m.direct_to_device EDUs already delivered, per origin (de-duplication).
CREATE TABLE to_device_inbound_ids (
    origin TEXT NOT NULL,
    message_id TEXT NOT NULL,
    received_ts BIGINT NOT NULL,
    PRIMARY KEY (origin, message_id)
);

-- Remote users whose device lists we cache: the last stream_id applied, and whether a resync is due.
CREATE TABLE remote_device_lists (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL,
    stale INTEGER NOT NULL
);
-- The stream_ids of m.device_list_update EDUs applied per remote user (to check prev_id chains).
CREATE TABLE remote_device_list_seen (
    user_id TEXT NOT NULL,
    stream_id BIGINT NOT NULL,
    PRIMARY KEY (user_id, stream_id)
);
CREATE TABLE remote_devices (
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    display_name TEXT,
    key_json TEXT,
    PRIMARY KEY (user_id, device_id)
);

INSERT INTO aux_stream_positions (name, pos) VALUES ('to_device', 0);
INSERT INTO aux_stream_positions (name, pos) VALUES ('device_lists', 0);

-- The stream_id of the last m.device_list_update sent for each local user (the next one's prev_id).
CREATE TABLE device_list_outbound_last (
    user_id TEXT PRIMARY KEY,
    stream_id BIGINT NOT NULL
);
