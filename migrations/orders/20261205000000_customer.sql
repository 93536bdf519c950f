-- Who the order is for, as the users service knew them when it was placed
-- (fetched over gRPC): the name and email it ships and bills to. Orders
-- placed before this column existed have none.
ALTER TABLE orders ADD COLUMN customer_name TEXT;
ALTER TABLE orders ADD COLUMN customer_email TEXT;
