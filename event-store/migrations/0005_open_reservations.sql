-- What inventory's expiry of old reservations looks up: reservations by age, and the release
-- or commit that settled each. Partial, so they stay empty in the other contexts' stores.
CREATE INDEX events_reserved_at ON events (recorded_at) WHERE event_type = 'StockReserved';
CREATE INDEX events_reservation_settled ON events (aggregate_id, (payload -> event_type ->> 'order_id'))
    WHERE event_type IN ('ReservationReleased', 'ReservationCommitted');
