-- Who may log in. The password is kept only as an Argon2id PHC string.
CREATE TABLE credentials (
    user_id TEXT PRIMARY KEY,
    email TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- Failed logins per email, known or not, so that an unknown email and a
-- wrong password are treated alike. `locked_until` is in ms since the epoch.
CREATE TABLE login_failures (
    email TEXT PRIMARY KEY,
    failures BIGINT NOT NULL,
    locked_until BIGINT NOT NULL
);
