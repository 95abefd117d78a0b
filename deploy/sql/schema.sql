-- Equilibrium: the PostgreSQL fallback source (DESIGN.md, "Data sources").
-- Applied to the primary; a backup (hot standby) gets it by replication,
-- a stand-alone backup by running this file too.
CREATE TABLE IF NOT EXISTS current_zone_status (
    zone_id            text PRIMARY KEY,
    base_fare          numeric NOT NULL,
    current_multiplier numeric NOT NULL,
    supply_count       integer NOT NULL DEFAULT 0,
    demand_count       integer NOT NULL DEFAULT 0,
    last_updated       timestamptz NOT NULL DEFAULT now()
);
