"""The Synapse-compatible admin API (``/_synapse/admin/...``): thin routes over the domain packages."""
