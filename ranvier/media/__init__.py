"""The content repository (CS "Content repository", S2S "Content Repository").

* ``files``: the bytes, on disk under the data directory, named by their sha256 and written streaming
  (a temporary file renamed into place once complete), never held whole in memory.
* ``repository``: uploads (direct, and ``create`` then ``PUT``), downloads with the headers the spec
  requires, thumbnails, quarantine; metadata in ``ranvier.storage.sql.media``.
* ``thumbnailer``: Pillow, run in a worker thread, with a pixel limit checked before decoding.
* ``remote``: other servers' media fetched through the federation client and stored once.
* ``headers``: Content-Type and Content-Disposition as served.

The HTTP routes are thin: ``ranvier.client_api.media`` and ``ranvier.federation.media_routes``.
"""
