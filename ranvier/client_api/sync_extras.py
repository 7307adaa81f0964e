"""The sync token and the non-timeline streams of /sync now live in ranvier/sync/changes.py (shared with
simplified sliding sync); imported here so existing imports keep working."""

from __future__ import annotations

from ..sync.changes import Extras, SyncExtras, SyncToken

__all__ = ["Extras", "SyncExtras", "SyncToken"]
