-- Runs once, when the postgres container initialises its volume. Per event store: an owner
-- role that migrates, and the role its service runs as (which the service's start-up grants
-- only what event_store::SCHEMA says: append and read events, never change one). The
-- projections own the read database; the query API may only read it. Every role logs in with
-- a password (SCRAM). These passwords are for a laptop: change them here and in
-- docker-compose.yml for anything else.
CREATE ROLE orders_owner LOGIN PASSWORD 'orders_owner-dev-password';
CREATE ROLE orders LOGIN PASSWORD 'orders-dev-password';
CREATE ROLE inventory_owner LOGIN PASSWORD 'inventory_owner-dev-password';
CREATE ROLE inventory LOGIN PASSWORD 'inventory-dev-password';
CREATE ROLE payments_owner LOGIN PASSWORD 'payments_owner-dev-password';
CREATE ROLE payments LOGIN PASSWORD 'payments-dev-password';
CREATE ROLE orchestrator_owner LOGIN PASSWORD 'orchestrator_owner-dev-password';
CREATE ROLE orchestrator LOGIN PASSWORD 'orchestrator-dev-password';
CREATE ROLE projections LOGIN PASSWORD 'projections-dev-password';
CREATE ROLE query_api LOGIN PASSWORD 'query_api-dev-password';

REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC;

CREATE DATABASE orders OWNER orders_owner;
CREATE DATABASE inventory OWNER inventory_owner;
CREATE DATABASE payments OWNER payments_owner;
CREATE DATABASE orchestrator OWNER orchestrator_owner;
CREATE DATABASE read OWNER projections;

REVOKE ALL ON DATABASE orders, inventory, payments, orchestrator, read FROM PUBLIC;
GRANT CONNECT ON DATABASE orders TO orders;
GRANT CONNECT ON DATABASE inventory TO inventory;
GRANT CONNECT ON DATABASE payments TO payments;
GRANT CONNECT ON DATABASE orchestrator TO orchestrator;
GRANT CONNECT ON DATABASE read TO query_api;

\connect orders
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO orders;
\connect inventory
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO inventory;
\connect payments
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO payments;
\connect orchestrator
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO orchestrator;
\connect read
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO query_api;
-- In every schema: a rebuild creates tables elsewhere and then moves them into public.
ALTER DEFAULT PRIVILEGES FOR ROLE projections GRANT SELECT ON TABLES TO query_api;
