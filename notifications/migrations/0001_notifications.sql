-- What partners asked to be told, what is to be sent to each, and how each attempt went.

-- A partner's webhook endpoint. Its secret signs every delivery (Standard Webhooks); after a
-- rotation the previous one signs too until `previous_secret_until`.
CREATE TABLE webhook_endpoints
(
    id                    uuid PRIMARY KEY,
    url                   text        NOT NULL,
    description           text        NOT NULL DEFAULT '',
    -- Event names (`OrderConfirmed`), or `*` for every event of the streams read.
    event_types           text[]      NOT NULL,
    status                text        NOT NULL CHECK (status IN ('active', 'paused')),
    paused_reason         text,
    secret                text        NOT NULL,
    previous_secret       text,
    previous_secret_until timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);

-- One event for one endpoint: recorded in the transaction that records the event as read, sent
-- by whichever replica claims it first (for a lease), retried with backoff until delivered or
-- its retry window is over.
CREATE TABLE deliveries
(
    id               uuid PRIMARY KEY,
    endpoint_id      uuid        NOT NULL REFERENCES webhook_endpoints (id) ON DELETE CASCADE,
    event_id         text        NOT NULL,
    event_type       text        NOT NULL,
    aggregate_id     text        NOT NULL,
    sequence         bigint      NOT NULL,
    -- The CloudEvent as sent: sensitive fields redacted.
    payload          jsonb       NOT NULL,
    status           text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    locked_until     timestamptz,
    -- Retries stop this long after here (reset by an operator's resend).
    window_start     timestamptz NOT NULL DEFAULT now(),
    last_status_code integer,
    last_error       text,
    last_attempt_at  timestamptz,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz,
    UNIQUE (endpoint_id, event_id)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_in_order ON deliveries (endpoint_id, aggregate_id, sequence)
    WHERE status = 'pending';
CREATE INDEX deliveries_of_endpoint ON deliveries (endpoint_id, created_at DESC);

-- Every attempt, for the operators' delivery log.
CREATE TABLE delivery_attempts
(
    delivery_id uuid        NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    attempt     integer     NOT NULL,
    at          timestamptz NOT NULL,
    status_code integer,
    error       text,
    duration_ms integer     NOT NULL,
    PRIMARY KEY (delivery_id, attempt)
);

-- The last sequence recorded per aggregate: events are recorded in each aggregate's order,
-- whichever replica reads them.
CREATE TABLE consumer_positions
(
    stream       text   NOT NULL,
    aggregate_id text   NOT NULL,
    sequence     bigint NOT NULL,
    PRIMARY KEY (stream, aggregate_id)
);

-- How far the consumer got on a stream (as made at `stream_created`): where a lost consumer
-- starts again.
CREATE TABLE consumer_checkpoints
(
    stream          text PRIMARY KEY,
    stream_created  timestamptz NOT NULL,
    stream_sequence bigint      NOT NULL
);

-- A message that can never be read as an event, kept for an operator.
CREATE TABLE notification_dead_letters
(
    id              bigserial PRIMARY KEY,
    stream          text        NOT NULL,
    stream_sequence bigint      NOT NULL,
    subject         text        NOT NULL,
    reason          text        NOT NULL,
    payload         bytea       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);
