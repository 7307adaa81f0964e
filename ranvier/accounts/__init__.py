"""The account lifecycle beyond registration and login: deactivation and erasure."""
