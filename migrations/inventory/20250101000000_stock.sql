-- Stock per SKU, and what each order has reserved. A reservation row is
-- the answer to an order's commands: repeating `reserve` or `release` for
-- the same order finds it and changes nothing. `items` is JSON.
CREATE TABLE stock (
    sku TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    price_cents BIGINT NOT NULL CHECK (price_cents >= 0),
    available BIGINT NOT NULL CHECK (available >= 0)
);

CREATE TABLE reservations (
    order_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('reserved', 'refused', 'released')),
    items TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    reason TEXT,
    updated_at BIGINT NOT NULL
);
