"""What the rest of the server may ask of each storage table family, as ``typing.Protocol``s.

The room/event families (rooms, events, state, stream) are in ``ranvier.storage.interfaces``; the others
are here, one module per group of families: ``accounts``, ``federation``, ``directory``, ``e2ee``,
``push`` and ``annotations`` (receipts and relations). ``composite.Storage`` is the whole storage object
as the server's layers see it (with a one-attribute Protocol per family, ``HasEvents``, ``HasUsers``, ...,
for modules that need only some). The families a service owns and ``app.py`` builds over the database
(not attributes of ``Storage``) have theirs too: ``media``, ``presence``, ``appservice``, ``admin``,
``sliding_sync``, and ``federation.DeferredPduStorage``. The SQL classes in ``storage/sql/`` satisfy
these structurally (mypy checks it in each module's ``TYPE_CHECKING`` block), so callers depend on the
Protocols, not on the SQL modules.
"""
