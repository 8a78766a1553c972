-- The rest of the read side: products, payments, saga timelines, sales analytics, and how far
-- each projection is behind its stream.

-- Last sequence of the stream the worker saw, so lag (stream last - checkpoint) is readable
-- from the read database alone.
ALTER TABLE projection_checkpoints
    ADD COLUMN stream_last_sequence bigint NOT NULL DEFAULT 0;

CREATE TABLE products_view
(
    sku        text PRIMARY KEY,
    name       text        NOT NULL,
    unit_price bigint      NOT NULL,
    currency   text        NOT NULL,
    on_hand    bigint      NOT NULL,
    reserved   bigint      NOT NULL,
    available  bigint GENERATED ALWAYS AS (on_hand - reserved) STORED,
    version    bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX products_view_available ON products_view (available, sku);

CREATE TABLE payments_view
(
    order_id       uuid PRIMARY KEY,
    status         text        NOT NULL,
    currency       text        NOT NULL,
    authorised     bigint      NOT NULL DEFAULT 0,
    captured       bigint      NOT NULL DEFAULT 0,
    voided         bigint      NOT NULL DEFAULT 0,
    refunded       bigint      NOT NULL DEFAULT 0,
    decline_reason text,
    version        bigint      NOT NULL,
    updated_at     timestamptz NOT NULL
);

-- One row per saga event: the order's timeline, in order.
CREATE TABLE saga_timeline
(
    order_id uuid        NOT NULL,
    sequence bigint      NOT NULL,
    at       timestamptz NOT NULL,
    kind     text        NOT NULL,
    step     text,
    detail   jsonb       NOT NULL,
    PRIMARY KEY (order_id, sequence)
);

CREATE TABLE sagas_view
(
    order_id   uuid PRIMARY KEY,
    status     text        NOT NULL,
    outcome    text,
    version    bigint      NOT NULL,
    updated_at timestamptz NOT NULL
);

-- Sales of confirmed orders per day and SKU.
CREATE TABLE sales_daily
(
    day           date   NOT NULL,
    sku           text   NOT NULL,
    currency      text   NOT NULL,
    units         bigint NOT NULL,
    revenue_minor bigint NOT NULL,
    orders        bigint NOT NULL,
    PRIMARY KEY (day, sku, currency)
);

-- How orders ended, per day: confirmed, out_of_stock, payment_declined, timeout, failed, cancelled.
CREATE TABLE order_outcomes_daily
(
    day     date   NOT NULL,
    outcome text   NOT NULL,
    orders  bigint NOT NULL,
    PRIMARY KEY (day, outcome)
);
