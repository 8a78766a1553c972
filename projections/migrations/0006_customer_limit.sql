-- A product's per-customer limit (CustomerLimitSet), shown with the catalog: NULL is none.
ALTER TABLE products_view ADD COLUMN customer_limit bigint;
