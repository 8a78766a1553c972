-- What each customer's open orders hold: one row per (order, SKU) from OrderPlaced until the
-- order's confirmation, rejection or cancellation, kept by a trigger in the transaction that
-- appends the event. The same trigger enforces the orders service's fair shares: a customer's
-- open orders, and the units their open orders hold of one SKU, are bounded. The bounds are
-- the service's settings, which it gives each of its connections as
-- `streamshop.max_open_orders` and `streamshop.max_units_per_product` (unset: no bound, as in
-- every other context's store, where the trigger's WHEN clause never matches anyway).
--
-- A place past a bound raises SQLSTATE SR429 (open orders) or SR422 (units of one SKU),
-- message the rejection's code: the command bus answers it as a rejection, and nothing of the
-- command is written. The customer's advisory lock serialises their places across every
-- replica, so two at once cannot both pass a bound that only one of them fits.
CREATE TABLE customer_holdings
(
    order_id    text   NOT NULL,
    sku         text   NOT NULL,
    customer_id text   NOT NULL,
    units       bigint NOT NULL,
    PRIMARY KEY (order_id, sku)
);
CREATE INDEX customer_holdings_customer ON customer_holdings (customer_id, sku);

CREATE FUNCTION events_track_customer_holdings() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS
$$
DECLARE
    placed      json;
    customer    text;
    max_open    bigint := nullif(current_setting('streamshop.max_open_orders', true), '')::bigint;
    max_units   bigint := nullif(current_setting('streamshop.max_units_per_product', true), '')::bigint;
    open_orders bigint;
    over        record;
BEGIN
    IF NEW.event_type <> 'OrderPlaced' THEN
        DELETE FROM customer_holdings WHERE order_id = NEW.aggregate_id;
        RETURN NULL;
    END IF;
    placed := NEW.payload -> 'OrderPlaced';
    customer := placed ->> 'customer_id';
    -- An event without a customer or lines (none the orders service writes) holds nothing.
    IF customer IS NULL OR json_typeof(placed -> 'lines') IS DISTINCT FROM 'array' THEN
        RETURN NULL;
    END IF;
    PERFORM pg_advisory_xact_lock(hashtextextended('customer-holdings:' || customer, 0));
    INSERT INTO customer_holdings (order_id, sku, customer_id, units)
    SELECT NEW.aggregate_id, line ->> 'sku', customer,
           sum(CASE WHEN (line ->> 'quantity') ~ '^[0-9]{1,9}$' THEN (line ->> 'quantity')::bigint
                    ELSE 0 END)
    FROM json_array_elements(placed -> 'lines') AS line
    WHERE line ->> 'sku' IS NOT NULL
    GROUP BY line ->> 'sku'
    ON CONFLICT (order_id, sku) DO NOTHING;
    IF max_open IS NOT NULL AND max_open > 0 THEN
        SELECT count(DISTINCT order_id) INTO open_orders
        FROM customer_holdings WHERE customer_id = customer;
        IF open_orders > max_open THEN
            RAISE EXCEPTION USING ERRCODE = 'SR429', MESSAGE = 'too_many_open_orders',
                DETAIL = format('a customer may have at most %s open orders', max_open);
        END IF;
    END IF;
    IF max_units IS NOT NULL AND max_units > 0 THEN
        SELECT h.sku, sum(h.units) AS units INTO over
        FROM customer_holdings h
        WHERE h.customer_id = customer
          AND h.sku IN (SELECT sku FROM customer_holdings WHERE order_id = NEW.aggregate_id)
        GROUP BY h.sku
        HAVING sum(h.units) > max_units
        LIMIT 1;
        IF FOUND THEN
            RAISE EXCEPTION USING ERRCODE = 'SR422', MESSAGE = 'customer_limit',
                DETAIL = format('a customer''s open orders may hold at most %s units of %s; this order would make %s',
                                max_units, over.sku, over.units);
        END IF;
    END IF;
    RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION events_track_customer_holdings() FROM PUBLIC;

-- Created before the rows below are filled in, in the same transaction (see 0007).
CREATE TRIGGER events_track_customer_holdings
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'Order'
        AND NEW.event_type IN ('OrderPlaced', 'OrderConfirmed', 'OrderRejected', 'OrderCancelled'))
EXECUTE FUNCTION events_track_customer_holdings();

-- The orders already stored and still open (no confirmation, rejection or cancellation).
INSERT INTO customer_holdings (order_id, sku, customer_id, units)
SELECT e.aggregate_id, line ->> 'sku', e.payload -> 'OrderPlaced' ->> 'customer_id',
       sum(CASE WHEN (line ->> 'quantity') ~ '^[0-9]{1,9}$' THEN (line ->> 'quantity')::bigint
                ELSE 0 END)
FROM events e,
     json_array_elements(CASE WHEN json_typeof(e.payload -> 'OrderPlaced' -> 'lines') = 'array'
                              THEN e.payload -> 'OrderPlaced' -> 'lines' ELSE '[]'::json END) AS line
WHERE e.aggregate_type = 'Order' AND e.event_type = 'OrderPlaced'
  AND e.payload -> 'OrderPlaced' ->> 'customer_id' IS NOT NULL
  AND json_typeof(e.payload -> 'OrderPlaced' -> 'lines') = 'array'
  AND line ->> 'sku' IS NOT NULL
  AND NOT EXISTS (SELECT 1 FROM events t
                  WHERE t.aggregate_type = 'Order' AND t.aggregate_id = e.aggregate_id
                    AND t.event_type IN ('OrderConfirmed', 'OrderRejected', 'OrderCancelled'))
GROUP BY e.aggregate_id, line ->> 'sku', e.payload -> 'OrderPlaced' ->> 'customer_id'
ON CONFLICT (order_id, sku) DO NOTHING;

-- Every order passes through it: vacuumed as often as the outbox is.
ALTER TABLE customer_holdings SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000, autovacuum_vacuum_cost_delay = 0);
