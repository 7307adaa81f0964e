-- Ephemeral items by kind: 'ephemeral' (typing, receipts: the transaction's "ephemeral") or 'to_device'
-- (MSC2409's "de.sorunome.msc2409.to_device").
ALTER TABLE appservice_ephemeral ADD COLUMN kind TEXT NOT NULL DEFAULT 'ephemeral';

-- How far the appservice feed has read the receipts and to-device streams: what it queued and this
-- position are written in one transaction, so after a restart it goes on where it stopped.
CREATE TABLE appservice_feed_positions (
    stream TEXT PRIMARY KEY,
    pos BIGINT NOT NULL
);
