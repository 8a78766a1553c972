-- How far a service's durable consumers have acknowledged, per stream, as last read from the
-- server. When a consumer is deleted or changed behind the service's back, it is made again
-- to start just after its floor on the same stream, instead of from the beginning of the
-- log; when the stream itself was made again (another creation time), from its beginning.
-- Written by the orchestrator (its consumers on the contexts' streams); empty elsewhere.
CREATE TABLE consumer_floors
(
    consumer       text        NOT NULL,
    stream         text        NOT NULL,
    stream_created timestamptz NOT NULL,
    acknowledged   bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, stream)
);
