-- One row that edge's /health writes and reads back, proving D1 is reachable and writable.
CREATE TABLE health_probe (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    token TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
