"""Room logic composing protocol, storage and federation: intake, sending, membership, joins, sync."""
