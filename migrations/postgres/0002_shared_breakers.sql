-- compatible_from: 1
-- Expands only (a binary that knows version 1 never reads the new table): circuit breakers
-- shared by the instances on this database. A row while some instance has the breaker open,
-- until `open_until_ms` of the database's clock; a later trip replaces it, and it goes once
-- the endpoint answered again. `endpoint` is a digest of the URL, never the URL itself.
CREATE TABLE breakers (
    scope text NOT NULL,
    endpoint text NOT NULL,
    open_until_ms bigint NOT NULL,
    PRIMARY KEY (scope, endpoint)
);
