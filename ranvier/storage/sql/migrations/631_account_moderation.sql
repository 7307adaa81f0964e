-- Account moderation (CS "Account locking", "Account suspension", v1.12/v1.13; admin endpoints v1.18).
ALTER TABLE users ADD COLUMN locked INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN suspended INTEGER NOT NULL DEFAULT 0;
