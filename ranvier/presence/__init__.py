"""Presence (CS "Presence", S2S "Presence"): the pure rules (state.py), the service that tracks and
shares states (service.py) and the /sync section (sync_section.py)."""
