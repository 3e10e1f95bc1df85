-- compatible_from: 1
-- The first schema: the same tables as the embedded store, in PostgreSQL types. Times are
-- milliseconds since the Unix epoch (bigint), as the Backend trait carries them; lease and
-- heartbeat times are taken from the database's now(), never from a host's clock. JSON is
-- kept as `json` (the text as written), not `jsonb`: key order and number spelling of
-- attached data and states go out as they came in.
CREATE TABLE calls (
    tenant text NOT NULL,
    vendor text NOT NULL,
    vendor_call_id text NOT NULL,
    call_id text NOT NULL UNIQUE,
    version bigint NOT NULL,
    next_seq bigint NOT NULL,
    status text NOT NULL,
    attached json NOT NULL,
    state json,
    expires_at_ms bigint,
    updated_at_ms bigint NOT NULL,
    PRIMARY KEY (tenant, vendor, vendor_call_id)
);
CREATE INDEX calls_updated ON calls (updated_at_ms) WHERE state IS NULL;

CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    event_id text NOT NULL UNIQUE,
    tenant text NOT NULL,
    call_id text,
    seq bigint,
    event_type text NOT NULL,
    payload bytea NOT NULL,
    created_at_ms bigint NOT NULL,
    status smallint NOT NULL DEFAULT 0,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt_ms bigint NOT NULL,
    lease_owner text,
    lease_until_ms bigint NOT NULL DEFAULT 0,
    last_error text,
    done_at_ms bigint
);
CREATE INDEX outbox_due ON outbox (status, next_attempt_ms);
CREATE INDEX outbox_tenant ON outbox (tenant, status);

CREATE TABLE tenant_counters (
    tenant text PRIMARY KEY,
    pending bigint NOT NULL
);

CREATE TABLE timers (
    key text PRIMARY KEY,
    kind text NOT NULL,
    tenant text NOT NULL,
    due_ms bigint NOT NULL,
    payload json NOT NULL,
    lease_owner text,
    lease_until_ms bigint NOT NULL DEFAULT 0
);
CREATE INDEX timers_due ON timers (due_ms);

CREATE TABLE dedup (
    tenant text NOT NULL,
    key_hash bytea NOT NULL,
    expires_at_ms bigint NOT NULL,
    status integer NOT NULL,
    content_type text NOT NULL,
    body bytea NOT NULL,
    PRIMARY KEY (tenant, key_hash)
);
CREATE INDEX dedup_expiry ON dedup (expires_at_ms);

CREATE TABLE aliases (
    tenant text NOT NULL,
    namespace text NOT NULL,
    value text NOT NULL,
    owner_kind text NOT NULL,
    owner_id text NOT NULL,
    until_ms bigint,
    PRIMARY KEY (tenant, namespace, value)
);
CREATE INDEX aliases_owner ON aliases (tenant, owner_kind, owner_id);

CREATE TABLE leases (
    tenant text NOT NULL,
    adapter text NOT NULL,
    name text NOT NULL,
    holder text,
    epoch bigint NOT NULL,
    until_ms bigint NOT NULL,
    PRIMARY KEY (tenant, adapter, name)
);

CREATE TABLE endpoints (
    tenant text PRIMARY KEY,
    disabled_at_ms bigint NOT NULL,
    reason text NOT NULL
);

-- Live instances: one row per lease owner, its heartbeat in the database's clock. An owner
-- whose heartbeat lapsed is dead: its delivery, timer and connector leases are freed.
CREATE TABLE instances (
    owner_id text PRIMARY KEY,
    started_at timestamptz NOT NULL DEFAULT now(),
    heartbeat_at timestamptz NOT NULL DEFAULT now()
);
