-- Account lifecycle (issue 16): erasure, refresh tokens, expiring access tokens and OpenID tokens.

-- Users who asked for erasure when deactivating (CS "/account/deactivate", ``erase``): their events are
-- served redacted to users and servers that could not see them before the erasure.
CREATE TABLE erased_users (
    user_id TEXT PRIMARY KEY,
    erased_ts BIGINT NOT NULL
);

-- When an access token stops working (CS "Refreshing access tokens"); NULL: never.
ALTER TABLE access_tokens ADD COLUMN expires_ts BIGINT;

-- Refresh tokens (SHA-256 only, as for access tokens). A refresh token is for one device; using it
-- replaces it (and the access token issued with it) by a new pair.
CREATE TABLE refresh_tokens (
    token_sha256 TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    device_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL
);
CREATE INDEX refresh_tokens_by_device ON refresh_tokens (user_id, device_id);

-- OpenID tokens handed to third parties (CS "OpenID"), checked by /_matrix/federation/v1/openid/userinfo.
CREATE TABLE openid_tokens (
    token_sha256 TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    expires_ts BIGINT NOT NULL
);
