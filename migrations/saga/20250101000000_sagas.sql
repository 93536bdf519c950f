-- One row per order the saga runs, written at every step so that a saga
-- interrupted anywhere resumes or compensates when its event is delivered
-- again. `must_release` / `must_refund` say what compensation has to undo:
-- they are set before the command is sent, since its effect may land even
-- when the answer is lost.
CREATE TABLE sagas (
    order_id TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    items TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('reserving', 'charging', 'confirming', 'compensating', 'confirmed', 'cancelled')),
    amount_cents BIGINT NOT NULL DEFAULT 0,
    must_release BIGINT NOT NULL DEFAULT 0,
    must_refund BIGINT NOT NULL DEFAULT 0,
    reason TEXT,
    started_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
