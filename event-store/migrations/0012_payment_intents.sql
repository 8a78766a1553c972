-- The provider's PaymentIntent of each order's authorisation, stored as soon as the provider
-- has made it and before it is confirmed: a retried authorisation (its answer lost, its
-- process killed) reads that intent back instead of making a second one, so no order is ever
-- authorised twice, whether or not the provider keeps idempotency keys. Used by the payments
-- service's Stripe adapter; empty elsewhere.
CREATE TABLE payment_intents
(
    order_id   uuid PRIMARY KEY,
    intent_id  text        NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
