-- Push actions looked up by event: a redaction removes the redacted event's rows (as Synapse does), so
-- it no longer counts as unread nor appears in /notifications.
CREATE INDEX event_push_actions_by_event ON event_push_actions (event_id);
