-- The station (issue #20): the operators' re-check answers, the station's users and read-API
-- tokens, and the alarms operators acknowledge.
--
-- rechecks: one row per answer for a HOLD tray, as the station stores it and as ingest stores
-- the same answer from sqal/v1/{line}/{device}/recheck. Keyed like every message table on
-- (line_id, device_id, sample_id, ts), ts being when the operator answered: whichever of the two
-- writes first inserts the row, the other inserts nothing. A plain table: a plant re-checks a
-- few hundred trays a day. result_ts names the held result (results' key is the same four
-- columns with the result's ts).
CREATE TABLE rechecks (
    ts          timestamptz      NOT NULL,
    line_id     text             NOT NULL,
    device_id   text             NOT NULL,
    sample_id   text             NOT NULL,
    v           smallint         NOT NULL,
    result_ts   timestamptz      NOT NULL,
    decision    text             NOT NULL CHECK (decision IN ('PASS', 'HOLD', 'REJECT')),
    answer      text             NOT NULL CHECK (answer IN ('accept', 'reject')),
    mass_g      double precision CHECK (mass_g > 0),
    note        text,
    user_name   text             NOT NULL,
    received_at timestamptz      NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX rechecks_line_key ON rechecks (line_id, device_id, sample_id, ts);
CREATE INDEX rechecks_result ON rechecks (line_id, device_id, sample_id, result_ts);

-- Who may use the station: argon2id hashes (argon2-cffi's encoded form), never the password.
CREATE TABLE station_users (
    name          text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    role          text        NOT NULL CHECK (role IN ('viewer', 'operator', 'quality')),
    password_hash text        NOT NULL,
    language      text        NOT NULL DEFAULT 'en',
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Read-API tokens: only the SHA-256 of a random 256-bit token is kept (a token is not a
-- password: it has full entropy, so a fast hash cannot be brute-forced).
CREATE TABLE station_tokens (
    name         text        PRIMARY KEY CHECK (name ~ '^[A-Za-z0-9_.@-]{1,64}$'),
    token_sha256 bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

-- Alarms the station raised (a device offline, a line's reject rate above its profile's
-- alerts.reject_rate_max, dead letters arriving), and who acknowledged them. subject is the
-- device id, or '' for a line-wide alarm.
CREATE TABLE station_alarms (
    id         bigserial   PRIMARY KEY,
    line_id    text        NOT NULL,
    kind       text        NOT NULL CHECK (kind IN ('device_offline', 'reject_rate', 'dead_letters')),
    subject    text        NOT NULL,
    raised_at  timestamptz NOT NULL,
    detail     text        NOT NULL,
    cleared_at timestamptz,
    acked_by   text,
    acked_at   timestamptz,
    UNIQUE (line_id, kind, subject, raised_at)
);
CREATE INDEX station_alarms_open ON station_alarms (line_id) WHERE acked_at IS NULL OR cleared_at IS NULL;

-- The station's group role: reads what the reader reads, writes its own tables and re-checks.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'sqal_station') THEN
        CREATE ROLE sqal_station NOLOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO sqal_station', current_database());
END
$$;
GRANT USAGE ON SCHEMA public TO sqal_station;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO sqal_station;
GRANT SELECT, INSERT ON rechecks TO sqal_station;
GRANT SELECT, INSERT, UPDATE, DELETE ON station_users, station_tokens TO sqal_station;
GRANT SELECT, INSERT, UPDATE ON station_alarms TO sqal_station;
GRANT USAGE ON SEQUENCE station_alarms_id_seq TO sqal_station;

GRANT SELECT, INSERT ON rechecks TO sqal_ingest;
GRANT SELECT ON rechecks TO sqal_reader;
