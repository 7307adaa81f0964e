"""Server-side search (CS "Server Side Search") and the user directory (CS "User Directory").

``terms`` parses what a user typed into a query both full-text engines understand (pure); ``room_events``
answers ``POST /search`` over the index kept by ``storage.sql.search``, keeping to what the user may see;
``user_directory`` answers ``POST /user_directory/search``.
"""
