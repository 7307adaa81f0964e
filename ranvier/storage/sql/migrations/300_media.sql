-- The content repository (CS "Content repository"). Files live on disk, named by the sha256 of their
-- bytes (ranvier.media.files); these tables map media ids to them.
--
-- Media uploaded here. A row created by POST /_matrix/media/v1/create has no content yet (sha256 NULL)
-- until its PUT upload arrives, and lapses at unused_expires_at.
CREATE TABLE local_media (
    media_id TEXT NOT NULL PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_ts BIGINT NOT NULL,
    unused_expires_at BIGINT,
    uploaded_ts BIGINT,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT,
    sha256 TEXT,
    quarantined INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX local_media_user ON local_media (user_id, created_ts);
CREATE INDEX local_media_sha256 ON local_media (sha256);

-- Media of other servers, fetched for our users and kept (stored once, whoever asks).
CREATE TABLE remote_media (
    server_name TEXT NOT NULL,
    media_id TEXT NOT NULL,
    fetched_ts BIGINT NOT NULL,
    content_type TEXT,
    upload_name TEXT,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    quarantined INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (server_name, media_id)
);
CREATE INDEX remote_media_sha256 ON remote_media (sha256);

-- Thumbnails, keyed by the content they were made from (identical uploads share them); their bytes are
-- content-addressed files too.
CREATE TABLE media_thumbnails (
    source_sha256 TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    method TEXT NOT NULL,
    content_type TEXT NOT NULL,
    thumb_width INTEGER NOT NULL,
    thumb_height INTEGER NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (source_sha256, width, height, method)
);
