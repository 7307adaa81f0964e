-- The users who stored global account data of a type (their own push rules, an ignore list): the push hook
-- reads those of a room's local members from this side when they are fewer than the room's local members
-- (storage/sql/push_counts.py members_account_data_txn), so a join into a big room reads no row per member.
CREATE INDEX account_data_by_type ON account_data (room_id, data_type, user_id);
