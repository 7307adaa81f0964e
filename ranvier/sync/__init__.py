"""What changed for a user since a sync position, as /sync and simplified sliding sync (MSC4186) send it."""
