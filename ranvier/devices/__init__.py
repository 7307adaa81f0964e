"""End-to-end encryption, server side: devices and device lists (local, and remote ones with resync),
device/one-time/fallback keys, cross-signing, and the to-device inbox. The domain logic lives here; the
routes stay thin in client_api/ (keys.py, to_device.py) and federation/e2ee_routes.py. See
shared/ARCHITECTURE.md."""
