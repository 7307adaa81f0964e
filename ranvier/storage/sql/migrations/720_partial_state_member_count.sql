-- The joined member count of a room joined with partial state, as the resident told it just after our join
-- (send_join's answer carries no count: S2S GET /hierarchy's num_joined_members), and the count of joined
-- members we held at that moment: until the resync completes, /sync's room summary counts
-- joined_members_hint + (the members we hold now - joined_members_base). NULL until a server answered.
ALTER TABLE partial_state_rooms ADD COLUMN joined_members_hint BIGINT;
ALTER TABLE partial_state_rooms ADD COLUMN joined_members_base BIGINT;
