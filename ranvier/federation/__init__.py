"""Federation transport: keys and keyring, X-Matrix auth, discovery, the outbound client, key routes."""
