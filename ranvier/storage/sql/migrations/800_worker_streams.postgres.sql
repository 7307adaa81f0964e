-- Workers (ranvier.workers): several processes persist events into one PostgreSQL database.
-- Stream orderings come from sequences, so two writers never hand out the same position; a
-- single-process server keeps its in-memory counter and never touches them (a writer process moves a
-- sequence that fell behind up to the table's maximum when it starts).
CREATE SEQUENCE events_stream_seq MINVALUE 0 START 0;
CREATE SEQUENCE events_backfill_seq MINVALUE 0 START 0;
SELECT setval('events_stream_seq', GREATEST((SELECT MAX(stream_ordering) FROM events), 0));
SELECT setval('events_backfill_seq', GREATEST((SELECT -MIN(stream_ordering) FROM events), 0));
-- Per stream and writer process: every position this writer allocated up to here is committed or
-- abandoned. The minimum over the writers is where a starting reader may begin handing out tokens.
CREATE TABLE stream_writer_positions (
    stream TEXT NOT NULL,
    instance TEXT NOT NULL,
    position BIGINT NOT NULL,
    PRIMARY KEY (stream, instance)
);
