-- Outbox rows the relay can never publish (an event larger than the stream takes). The relay
-- moves such a row here, counts it in `outbox_dead_letters_total`, and carries on with the
-- rest, so one bad row cannot stop a context's event log. The event itself stays in `events`.
CREATE TABLE outbox_dead_letters
(
    id             bigint PRIMARY KEY,
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    sequence       bigint      NOT NULL,
    reason         text        NOT NULL,
    dead_at        timestamptz NOT NULL DEFAULT now()
);
