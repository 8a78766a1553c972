-- Runs once, when the postgres container initialises its volume: one database and role per
-- service, and a read-only role for the query API. Trust auth: local development only.
CREATE ROLE orders LOGIN;
CREATE ROLE inventory LOGIN;
CREATE ROLE payments LOGIN;
CREATE ROLE orchestrator LOGIN;
CREATE ROLE projections LOGIN;
CREATE ROLE query_api LOGIN;

CREATE DATABASE orders OWNER orders;
CREATE DATABASE inventory OWNER inventory;
CREATE DATABASE payments OWNER payments;
CREATE DATABASE orchestrator OWNER orchestrator;
CREATE DATABASE read OWNER projections;

\connect read
GRANT CONNECT ON DATABASE read TO query_api;
GRANT USAGE ON SCHEMA public TO query_api;
-- In every schema: a rebuild creates tables elsewhere and then moves them into public.
ALTER DEFAULT PRIVILEGES FOR ROLE projections GRANT SELECT ON TABLES TO query_api;
