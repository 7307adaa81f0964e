-- When the current failure streak towards a destination began (the admin API's failure_ts); set by the
-- first failure after a success and kept by the later ones, cleared with the row on success.
ALTER TABLE destination_retry ADD COLUMN failure_ts BIGINT;
