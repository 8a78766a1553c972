-- The sagas not yet completed, kept by a trigger in the transaction that appends each saga's
-- status events. The orchestrator's recovery lists the open ones every few seconds and
-- operators list the parked ones; both used to group every saga event ever stored, which
-- took 1.7 s of the database's CPU for 100,000 finished sagas and grew with the history. This
-- table holds only the sagas still in flight or parked. It stays empty in the other contexts'
-- stores (the trigger's WHEN clause).
CREATE TABLE open_sagas
(
    aggregate_id text PRIMARY KEY,
    -- Parked for attention: it waits for an operator's retry, not for recovery.
    parked       boolean NOT NULL DEFAULT false
);

-- Runs as the owner, like the outbox's trigger: the service's role may only read the table, so
-- nothing but an appended event changes it.
CREATE FUNCTION events_track_open_sagas() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS
$$
BEGIN
    IF NEW.event_type = 'SagaCompleted' THEN
        DELETE FROM open_sagas WHERE aggregate_id = NEW.aggregate_id;
    ELSE
        -- SagaStarted and SagaResumed open it; SagaNeedsAttention parks it.
        INSERT INTO open_sagas (aggregate_id, parked)
        VALUES (NEW.aggregate_id, NEW.event_type = 'SagaNeedsAttention')
        ON CONFLICT (aggregate_id) DO UPDATE SET parked = EXCLUDED.parked;
    END IF;
    RETURN NULL;
END;
$$;
REVOKE ALL ON FUNCTION events_track_open_sagas() FROM PUBLIC;

-- Created before the rows below are filled in, in the same transaction: its lock holds back
-- any append until this migration commits, so no saga event falls between the two.
CREATE TRIGGER events_track_open_sagas
    AFTER INSERT ON events
    FOR EACH ROW
    WHEN (NEW.aggregate_type = 'OrderSaga'
        AND NEW.event_type IN ('SagaStarted', 'SagaCompleted', 'SagaNeedsAttention', 'SagaResumed'))
EXECUTE FUNCTION events_track_open_sagas();

-- The sagas already stored: the last of each one's status events decides.
INSERT INTO open_sagas (aggregate_id, parked)
SELECT aggregate_id, last = 'SagaNeedsAttention'
FROM (SELECT aggregate_id,
             (array_agg(event_type ORDER BY sequence DESC))[1] AS last
      FROM events
      WHERE aggregate_type = 'OrderSaga'
        AND event_type IN ('SagaStarted', 'SagaCompleted', 'SagaNeedsAttention', 'SagaResumed')
      GROUP BY aggregate_id) status
WHERE last <> 'SagaCompleted';

-- Every saga passes through it (a row in, a row out): vacuumed as often as the outbox is.
ALTER TABLE open_sagas SET (autovacuum_vacuum_scale_factor = 0, autovacuum_vacuum_threshold = 2000,
    autovacuum_vacuum_cost_delay = 0);
