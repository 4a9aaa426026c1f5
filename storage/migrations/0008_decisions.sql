-- Decisions from probabilities (issue #17, docs/domain.md §5 revised 2026-12): what the reject
-- gate did with each tray, the figures behind it, and the checkweigher's mass it decided fill
-- on. Additive and nullable: results of earlier analyzers keep NULL here, and their
-- `confidence` meant what `data_quality` means now.

ALTER TABLE results ADD COLUMN decision text CHECK (decision IN ('PASS', 'HOLD', 'REJECT'));
ALTER TABLE results ADD COLUMN data_quality real;
ALTER TABLE results ADD COLUMN p_reject real;
ALTER TABLE results ADD COLUMN p_defects jsonb;
ALTER TABLE results ADD COLUMN weight_mass_g double precision;

CREATE INDEX results_line_decision_ts ON results (line_id, decision, ts DESC)
    WHERE decision IN ('HOLD', 'REJECT');
