-- The latest snapshot of each aggregate, written every `SNAPSHOT_EVERY` events in the
-- transaction that appends the event crossing the mark. A load reads the snapshot and only
-- the events after it, so it reads at most a few hundred events however long the history.
-- Snapshots are derived: one that no longer decodes (the state's shape changed) is ignored,
-- and the aggregate is folded from its events.
CREATE TABLE snapshots
(
    aggregate_type text        NOT NULL,
    aggregate_id   text        NOT NULL,
    version        bigint      NOT NULL,
    state          json        NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_type, aggregate_id)
);
