"""Process roles and replication between Ranvier processes (issue 22); every role also runs in one process."""
