-- The role a command service runs as may append events and read them, never change or remove
-- one (see event_store::SCHEMA's grants). The triggers that write the outbox and idempotency
-- rows of an appended event therefore run as the tables' owner, with a fixed search path, so
-- the service's role needs no INSERT on the outbox: nothing but an event can put a row there.
ALTER FUNCTION events_enqueue_outbox() SECURITY DEFINER SET search_path = public, pg_temp;
ALTER FUNCTION events_record_idempotency() SECURITY DEFINER SET search_path = public, pg_temp;
REVOKE ALL ON FUNCTION events_enqueue_outbox() FROM PUBLIC;
REVOKE ALL ON FUNCTION events_record_idempotency() FROM PUBLIC;

-- Only the owner may VACUUM, and the relay does not run as the owner: autovacuum visits the
-- outbox (a queue: every row is deleted within moments) far more often than its default.
ALTER TABLE outbox SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0);
