-- Inventory's expiry sweeps reservations in (recorded_at, aggregate_id, sequence) order and
-- resumes after the last one it saw: the events a transaction commits together share their
-- `recorded_at`, so the time alone cannot say where a batch ended. Partial, as the index it
-- replaces, so it stays empty in the other contexts' stores.
CREATE INDEX events_reserved_keyset ON events (recorded_at, aggregate_id, sequence)
    WHERE event_type = 'StockReserved';
DROP INDEX events_reserved_at;
