-- Roles (DESIGN.md, "Database"): group roles without LOGIN; grant them to login users, e.g.
--   CREATE ROLE ingest LOGIN PASSWORD '...' IN ROLE sqal_ingest;
--   CREATE ROLE grafana LOGIN PASSWORD '...' IN ROLE sqal_reader;
-- Roles are cluster-wide, so they are created only when missing; grants are per database.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqal_ingest') THEN
        CREATE ROLE sqal_ingest NOLOGIN;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqal_reader') THEN
        CREATE ROLE sqal_reader NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO sqal_ingest', current_database());
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO sqal_reader', current_database());
END
$$;

GRANT USAGE ON SCHEMA public TO sqal_ingest, sqal_reader;
-- ingest writes frames, results, status and dead letters (insert only) and upserts roll-ups.
GRANT SELECT, INSERT ON tof_frames, spectral_frames, device_status, results, dead_letters
    TO sqal_ingest;
GRANT SELECT, INSERT, UPDATE ON results_1m, defects_1m TO sqal_ingest;
GRANT SELECT ON schema_version TO sqal_ingest;
-- Grafana and reports read everything, write nothing.
GRANT SELECT ON tof_frames, spectral_frames, device_status, results, dead_letters,
    results_1m, defects_1m, results_1m_view, schema_version TO sqal_reader;
