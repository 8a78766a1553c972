-- Projection bookkeeping: checkpoints, per-aggregate positions, dead letters.

-- The highest stream sequence each projection has committed; lag = stream last seq - this.
CREATE TABLE projection_checkpoints
(
    projection      text PRIMARY KEY,
    stream          text        NOT NULL,
    stream_sequence bigint      NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- The last event sequence applied per aggregate and projection: what makes a redelivered or
-- duplicated event a no-op, and what detects a gap (an event arriving before its predecessor).
CREATE TABLE projection_positions
(
    projection     text   NOT NULL,
    aggregate_type text   NOT NULL,
    aggregate_id   text   NOT NULL,
    sequence       bigint NOT NULL,
    PRIMARY KEY (projection, aggregate_type, aggregate_id)
);

-- Messages that can never be applied, kept with the reason; the projection goes on without them.
CREATE TABLE dead_letters
(
    id              bigserial PRIMARY KEY,
    projection      text        NOT NULL,
    stream          text        NOT NULL,
    stream_sequence bigint      NOT NULL,
    subject         text        NOT NULL,
    reason          text        NOT NULL,
    payload         bytea       NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT now()
);

-- Read model: one row per order, as the query API serves it.
CREATE TABLE orders_view
(
    order_id    uuid PRIMARY KEY,
    customer_id uuid        NOT NULL,
    status      text        NOT NULL,
    lines       jsonb       NOT NULL,
    version     bigint      NOT NULL,
    placed_at   timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX orders_view_customer ON orders_view (customer_id, placed_at DESC, order_id DESC);

-- Read model: how many orders each customer placed (a counter, so a double-applied event shows).
CREATE TABLE customer_order_counts
(
    customer_id uuid PRIMARY KEY,
    orders      bigint NOT NULL
);
