-- Production data apart from everything else, and lots (issue #19 items 1-3).
--
-- Each result carries the mode of its device's config (`production`, `calibration`,
-- `maintenance`) and the line's open lot. Results stored before this migration read
-- `production` and no lot: earlier analyzers published neither. Adding a column with a constant
-- default rewrites nothing (PostgreSQL 11+), on a hypertable as on a table.
ALTER TABLE results ADD COLUMN mode text NOT NULL DEFAULT 'production'
    CHECK (mode IN ('production', 'calibration', 'maintenance'));
ALTER TABLE results ADD COLUMN lot_id text;
-- The σ of the ToF mass estimate m̂ (the expected counts of the packers' rules) and the
-- checkweigher's own σ when it weighed the tray.
ALTER TABLE results ADD COLUMN tof_sigma_mass_g real;
ALTER TABLE results ADD COLUMN weight_sigma_g double precision;
CREATE INDEX results_line_lot_ts ON results (line_id, lot_id, ts DESC) WHERE lot_id IS NOT NULL;
-- What is not product is rare: the dashboards and reports count it apart through this index.
CREATE INDEX results_line_mode_ts ON results (line_id, mode, ts DESC) WHERE mode <> 'production';

ALTER TABLE device_config ADD COLUMN mode text NOT NULL DEFAULT 'production'
    CHECK (mode IN ('production', 'calibration', 'maintenance'));

-- A line's lots as the operator sets them on sqal/v1/{line}/lot (retained): one row per lot,
-- ended set when the operator ends it (ingest never clears it). A lot id is unique within its
-- line; one reused with another start is a conflict (dead-lettered, the first one stays).
CREATE TABLE lots (
    line_id     text             NOT NULL,
    lot_id      text             NOT NULL,
    product     text             NOT NULL,
    qn_g        double precision NOT NULL CHECK (qn_g > 0),
    tne_g       double precision NOT NULL CHECK (tne_g > 0 AND tne_g < qn_g),
    started     timestamptz      NOT NULL,
    ended       timestamptz      CHECK (ended >= started),
    note        text,
    received_at timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (line_id, lot_id)
);
CREATE INDEX lots_line_started ON lots (line_id, started DESC);

GRANT SELECT, INSERT, UPDATE ON lots TO sqal_ingest;
GRANT SELECT ON lots TO sqal_reader;

-- The standard normal distribution function Φ(x), for the packers' rules' expected counts
-- Σ Φ((T − m̂)/σ) computed in the database (the Quality dashboard). PostgreSQL 15 has no erf:
-- Abramowitz and Stegun 7.1.26 (|error| < 1.5e-7 on erf, so < 7.5e-8 on Φ). exp() of less
-- than -708 underflows, which PostgreSQL raises as an error: z² is capped at 700 (Φ is 0 or 1
-- to double precision long before).
CREATE FUNCTION sqal_norm_cdf(x double precision) RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE WHEN x >= 0 THEN 0.5 * (1 + e) ELSE 0.5 * (1 - e) END
    FROM (SELECT 1 - (((((1.061405429 * t - 1.453152027) * t + 1.421413741) * t
                        - 0.284496736) * t + 0.254829592) * t) * exp(-least(z * z, 700)) AS e
          FROM (SELECT 1 / (1 + 0.3275911 * z) AS t, z
                FROM (SELECT abs(x) / sqrt(2.0) AS z) a) b) c
$$;

-- Student's t quantile t(0.975, df): the half-width of the mean's 95 % interval is
-- t·s/√n. Exact to 4 decimals for df ≤ 30 (the table), Cornish-Fisher's expansion beyond
-- (error 3e-8 at df = 31, falling as df grows); NULL for df < 1.
CREATE FUNCTION sqal_t975(df integer) RETURNS double precision
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT CASE
        WHEN df < 1 THEN NULL
        WHEN df <= 30 THEN (ARRAY[12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646,
            2.3060, 2.2622, 2.2281, 2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098,
            2.1009, 2.0930, 2.0860, 2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518,
            2.0484, 2.0452, 2.0423])[df]
        ELSE z + (z ^ 3 + z) / (4 * df) + (5 * z ^ 5 + 16 * z ^ 3 + 3 * z) / (96.0 * df ^ 2)
             + (3 * z ^ 7 + 19 * z ^ 5 + 17 * z ^ 3 - 15 * z) / (384.0 * df ^ 3)
             + (79 * z ^ 9 + 776 * z ^ 7 + 1482 * z ^ 5 - 1920 * z ^ 3 - 945 * z)
               / (92160.0 * df ^ 4)
    END
    FROM (SELECT 1.959963984540054::double precision AS z) q
$$;
