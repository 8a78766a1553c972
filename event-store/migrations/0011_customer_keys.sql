-- Each customer's data key, wrapped (encrypted) by the service's master key: what seals their
-- sensitive values (payment tokens) in the events. Erasing a customer sets `wrapped` to NULL
-- and keeps the row as a tombstone: what was sealed with the key never opens again, and the
-- customer can place no more orders. Used by the orders service; empty elsewhere.
CREATE TABLE customer_keys
(
    customer_id uuid PRIMARY KEY,
    key_id      uuid        NOT NULL UNIQUE,
    wrapped     bytea,
    created_at  timestamptz NOT NULL DEFAULT now(),
    erased_at   timestamptz,
    CHECK ((wrapped IS NULL) = (erased_at IS NOT NULL))
);
