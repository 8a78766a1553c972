-- The reservations neither released nor committed, kept by a trigger in the transaction that
-- appends each reservation event. Inventory's expiry lists the old ones here. It used to
-- search every StockReserved event with an anti-join against the settlements, a cost that
-- grows with every reservation ever made (4 s of the database's CPU at 500,000), paid on
-- every sweep and again after every restart. This table holds only the open ones. It stays
-- empty in the other contexts' stores (the trigger's WHEN clause).
CREATE TABLE open_reservations
(
    aggregate_id text        NOT NULL,
    order_id     text        NOT NULL,
    -- The reservation's `recorded_at`: its transaction's start.
    reserved_at  timestamptz NOT NULL,
    PRIMARY KEY (aggregate_id, order_id)
);
CREATE INDEX open_reservations_by_age ON open_reservations (reserved_at, aggregate_id, order_id);

-- Runs as the owner, like the outbox's trigger: the service's role may only read the table.
CREATE FUNCTION events_track_open_reservations() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS
$$
DECLARE
    reservation text := NEW.payload -> NEW.event_type ->> 'order_id';
BEGIN
    IF NEW.event_type = 'StockReserved' THEN
        INSERT INTO open_reservations (aggregate_id, order_id, reserved_at)
        VALUES (NEW.aggregate_id, reservation, NEW.recorded_at)
        ON CONFLICT DO NOTHING;
    ELSE
        DELETE FROM open_reservations
        WHERE aggregate_id = NEW.aggregate_id AND order_id = reservation;
    END IF;
    RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION events_track_open_reservations() FROM PUBLIC;

-- Created before the rows below are filled in, in the same transaction: its lock holds back
-- any append until this migration commits, so no reservation event falls between the two.
CREATE TRIGGER events_track_open_reservations
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'Product'
        AND NEW.event_type IN ('StockReserved', 'ReservationReleased', 'ReservationCommitted'))
EXECUTE FUNCTION events_track_open_reservations();

-- The reservations already stored: open when the last event of its order is the reservation.
INSERT INTO open_reservations (aggregate_id, order_id, reserved_at)
SELECT aggregate_id, order_id, recorded_at
FROM (SELECT DISTINCT ON (aggregate_id, payload -> event_type ->> 'order_id')
             aggregate_id, payload -> event_type ->> 'order_id' AS order_id, event_type, recorded_at
      FROM events
      WHERE aggregate_type = 'Product'
        AND event_type IN ('StockReserved', 'ReservationReleased', 'ReservationCommitted')
      ORDER BY aggregate_id, payload -> event_type ->> 'order_id', sequence DESC) last
WHERE event_type = 'StockReserved' AND order_id IS NOT NULL;

-- What the expiry searched before; nothing reads them now, and every reservation event
-- paid for them.
DROP INDEX events_reserved_at;
DROP INDEX events_reservation_settled;

-- Every reservation passes through it (a row in, a row out): vacuumed as often as the outbox.
ALTER TABLE open_reservations SET (autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 2000, autovacuum_vacuum_cost_delay = 0);
