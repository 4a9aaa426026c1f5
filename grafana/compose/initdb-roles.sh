#!/bin/sh
# First start of the compose stack's TimescaleDB (docker-entrypoint-initdb.d): login roles for
# Grafana (read-only), ingest (insert-only) and the station (reads; writes its own tables and
# re-checks). The group roles are created here when missing so
# the logins can join them; `sqal db migrate` then finds them and grants per database
# (storage/migrations/0003_roles.sql).
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v reader_pw="$GRAFANA_DB_PASSWORD" -v ingest_pw="$INGEST_DB_PASSWORD" \
    -v station_pw="$STATION_DB_PASSWORD" <<'SQL'
SELECT 'CREATE ROLE sqal_reader NOLOGIN'
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqal_reader') \gexec
SELECT 'CREATE ROLE sqal_ingest NOLOGIN'
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqal_ingest') \gexec
CREATE ROLE grafana LOGIN PASSWORD :'reader_pw' IN ROLE sqal_reader;
SELECT 'CREATE ROLE sqal_station NOLOGIN'
    WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqal_station') \gexec
CREATE ROLE ingest LOGIN PASSWORD :'ingest_pw' IN ROLE sqal_ingest;
CREATE ROLE station LOGIN PASSWORD :'station_pw' IN ROLE sqal_station;
SQL
