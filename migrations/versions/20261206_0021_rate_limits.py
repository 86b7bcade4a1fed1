"""Rate limits shared by every process: the sign-in and other sensitive operations' buckets.

Schema `gwm_rate`, outside the tenant model (docs/decisions.md Q6): one UNLOGGED table of buckets
keyed by a SHA-256 digest (of a client address, an account or a tenant: never the value itself),
each holding the time its next unit is due (GCRA's "theoretical arrival time"), and one function
`gwm_rate.take` that charges several buckets all or nothing in a single round trip. Unlogged: a
crash forgets the counters, which only forgives a minute of attempts; writes skip the WAL.

Revision ID: 0021
Revises: 0020
Create Date: 2026-12-06 02:10:00+00:00
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# keys: the buckets' digests, in ascending order (every caller locks in that order, so two takers never
# deadlock); per_period: each bucket's allowance per `period_seconds`; cost: units charged to every one.
# Returns {0, 0} when every bucket had room (all are charged), else {the seconds until they all would,
# the 1-based position of the key that waits longest} (none is charged). The clock is the database's,
# the same for every process and machine.
TAKE = """
CREATE FUNCTION gwm_rate.take(keys bytea[], per_period integer[], period_seconds double precision, cost integer)
RETURNS double precision[]
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    t_now timestamptz := clock_timestamp();
    period interval := make_interval(secs => period_seconds);
    due timestamptz;
    dues timestamptz[] := '{}';
    wait double precision := 0;
    worst integer := 0;
    i integer;
BEGIN
    IF random() < 0.001 THEN  -- now and then, forget buckets that are full again (as good as absent)
        DELETE FROM gwm_rate.buckets WHERE key IN (
            SELECT b.key FROM gwm_rate.buckets b WHERE b.tat < t_now LIMIT 1000 FOR UPDATE SKIP LOCKED
        );
    END IF;
    INSERT INTO gwm_rate.buckets (key, tat) SELECT k, t_now FROM unnest(keys) AS k ORDER BY k
    ON CONFLICT (key) DO NOTHING;
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        SELECT b.tat INTO due FROM gwm_rate.buckets b WHERE b.key = keys[i] FOR UPDATE;
        dues[i] := greatest(due, t_now) + period * (least(cost, per_period[i])::double precision / per_period[i]);
        IF dues[i] - t_now > period AND extract(epoch FROM dues[i] - period - t_now) > wait THEN
            wait := extract(epoch FROM dues[i] - period - t_now)::double precision;
            worst := i;
        END IF;
    END LOOP;
    IF worst > 0 THEN
        RETURN ARRAY[wait, worst];
    END IF;
    INSERT INTO gwm_rate.buckets (key, tat) SELECT k, t FROM unnest(keys, dues) AS u(k, t)
    ON CONFLICT (key) DO UPDATE SET tat = excluded.tat;
    RETURN ARRAY[0, 0];
END
$$
"""


def upgrade() -> None:
    op.execute("CREATE SCHEMA gwm_rate")
    op.execute(
        "CREATE UNLOGGED TABLE gwm_rate.buckets ("
        " key bytea PRIMARY KEY CHECK (octet_length(key) = 32),"
        " tat timestamptz NOT NULL)"
    )
    op.execute(TAKE)
    op.execute("GRANT USAGE ON SCHEMA gwm_rate TO gwm_app")
    op.execute("GRANT SELECT, INSERT, UPDATE, DELETE ON gwm_rate.buckets TO gwm_app")
    signature = "gwm_rate.take(bytea[], integer[], double precision, integer)"
    op.execute(f"REVOKE ALL ON FUNCTION {signature} FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION {signature} TO gwm_app")


def downgrade() -> None:
    op.execute("DROP SCHEMA gwm_rate CASCADE")
