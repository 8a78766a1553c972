-- Order emails to customers: what they need, who turned them off, and what is to be sent.

-- An order's facts for its emails, kept as its events are read (the sealed address and the
-- lines from OrderPlaced, the prices from OrderPriced) until its last email is recorded.
CREATE TABLE order_mail
(
    order_id     uuid PRIMARY KEY,
    customer_id  uuid        NOT NULL,
    -- Sealed with the customer's data key: only orders opens it, and erasing the customer
    -- makes it unreadable.
    email_sealed text        NOT NULL,
    lines        jsonb       NOT NULL,
    priced       jsonb,
    total        jsonb,
    placed_at    timestamptz NOT NULL
);

-- Customers who turned their order emails off (or on again); no row: on.
CREATE TABLE email_preferences
(
    customer_id uuid PRIMARY KEY,
    email       boolean     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- One email about one order event: recorded in the transaction that records the event as
-- read, sent by whichever replica claims it (for a lease), retried with backoff.
CREATE TABLE emails
(
    id              uuid PRIMARY KEY,
    event_id        text        NOT NULL UNIQUE,
    order_id        uuid        NOT NULL,
    customer_id     uuid        NOT NULL,
    kind            text        NOT NULL CHECK (kind IN ('confirmed', 'rejected', 'cancelled')),
    email_sealed    text        NOT NULL,
    -- What the templates show: lines, total, reason.
    content         jsonb       NOT NULL,
    status          text        NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'sent', 'failed', 'skipped')),
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    locked_until    timestamptz,
    window_start    timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    -- When the event was stored: the notification delay is measured from here.
    event_time      timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz
);
CREATE INDEX emails_due ON emails (next_attempt_at) WHERE status = 'pending';
CREATE INDEX emails_of_customer ON emails (customer_id, created_at DESC);
