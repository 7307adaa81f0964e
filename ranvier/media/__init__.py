"""The content repository (CS "Content repository", S2S "Content Repository").

* ``files``: the bytes, on disk under the data directory, named by their sha256 and written streaming
  (a temporary file renamed into place once complete), never held whole in memory.
* ``repository``: uploads (direct, and ``create`` then ``PUT``), downloads, thumbnails, quarantine,
  deletion, the per-user quota and the bound on the remote cache; metadata in ``ranvier.storage.sql.media``.
* ``thumbnailer``: Pillow, run in a worker thread, with a pixel limit checked before decoding.
* ``remote``: other servers' media fetched through the federation client and stored once.
* ``federation``: what the federation media routes serve (our own media only).
* ``preview``: URL previews behind an IP blocklist (off by default).
* ``headers``: Content-Type and Content-Disposition as served.

The HTTP routes are thin: ``ranvier.client_api.media``, ``ranvier.federation.media_routes`` and
``ranvier.admin.media``.
"""
