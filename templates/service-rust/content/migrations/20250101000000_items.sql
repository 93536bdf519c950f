-- The items {{name}} keeps. Runs once, in file-name order with any later
-- migrations; works on SQLite and PostgreSQL alike.
CREATE TABLE items (
    id TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
