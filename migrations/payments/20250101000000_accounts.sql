-- One account per user, opened on `user.created`, and one charge row per
-- order: the remembered answer to that order's commands. A refund that
-- comes before its charge leaves a 'voided' row so a late charge is refused.
CREATE TABLE accounts (
    user_id TEXT PRIMARY KEY,
    credit_limit_cents BIGINT NOT NULL CHECK (credit_limit_cents >= 0),
    charged_cents BIGINT NOT NULL CHECK (charged_cents >= 0),
    created_at BIGINT NOT NULL
);

CREATE TABLE charges (
    order_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    amount_cents BIGINT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('charged', 'declined', 'refunded', 'voided')),
    reason TEXT,
    updated_at BIGINT NOT NULL
);
