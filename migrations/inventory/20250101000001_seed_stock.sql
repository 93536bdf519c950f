-- The demo's catalogue.
INSERT INTO stock (sku, name, price_cents, available) VALUES
    ('KEYB-001', 'Mechanical keyboard', 8900, 500),
    ('MOUS-002', 'Wireless mouse', 2900, 500),
    ('CABL-003', 'USB-C cable', 900, 1000),
    ('MONI-004', '27-inch monitor', 32900, 50),
    ('LAPT-005', 'Laptop', 149900, 10),
    ('LAMP-006', 'Desk lamp', 3900, 3);
