-- The postgres-es event store (its own schema, unchanged but for `recorded_at`), and the
-- transactional outbox that feeds JetStream.

CREATE TABLE events
(
    aggregate_type text                         NOT NULL,
    aggregate_id   text                         NOT NULL,
    sequence       bigint CHECK (sequence >= 0) NOT NULL,
    event_type     text                         NOT NULL,
    event_version  text                         NOT NULL,
    payload        json                         NOT NULL,
    metadata       json                         NOT NULL,
    -- Not written by postgres-es (it names its columns): the commit's time, for CloudEvents `time`.
    recorded_at    timestamptz                  NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id, sequence)
);

-- One row per event not yet acknowledged by JetStream. Written by the trigger below inside the
-- transaction that appends the event, so an event is never committed without its outbox row.
CREATE TABLE outbox
(
    id             bigserial PRIMARY KEY,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL
);

CREATE FUNCTION events_enqueue_outbox() RETURNS trigger
    LANGUAGE plpgsql AS
$$
BEGIN
    INSERT INTO outbox (aggregate_type, aggregate_id, sequence)
    VALUES (NEW.aggregate_type, NEW.aggregate_id, NEW.sequence);
    -- Delivered at commit, and folded into one per transaction: wakes the relay of any replica.
    PERFORM pg_notify('outbox', '');
    RETURN NULL;
END;
$$;

CREATE TRIGGER events_enqueue_outbox
    AFTER INSERT ON events
    FOR EACH ROW
EXECUTE FUNCTION events_enqueue_outbox();
