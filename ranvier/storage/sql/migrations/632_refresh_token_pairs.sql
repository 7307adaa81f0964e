-- A refresh token replaces the access token issued with it, not every token of its device (a device
-- logged in again keeps its newer session when an older refresh token is used).
ALTER TABLE refresh_tokens ADD COLUMN access_token_sha256 TEXT;
