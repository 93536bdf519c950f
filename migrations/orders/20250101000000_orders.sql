-- Orders and their outcome. `items` is the JSON list of {sku, quantity}.
-- A client's Idempotency-Key is unique per user; `request_fingerprint`
-- tells a true retry from a different request reusing the key.
CREATE TABLE orders (
    order_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'cancelled')),
    items TEXT NOT NULL,
    amount_cents BIGINT,
    reason TEXT,
    idempotency_key TEXT,
    request_fingerprint TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (user_id, idempotency_key)
);
