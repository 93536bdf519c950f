-- The tables the message-handler test guest keeps what it handled in.
CREATE TABLE handled (
    id TEXT PRIMARY KEY,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    traceparent TEXT,
    replica TEXT,
    reason TEXT
);
CREATE TABLE attempts (id TEXT PRIMARY KEY, count INTEGER NOT NULL);
CREATE TABLE counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
