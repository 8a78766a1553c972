-- The order read model follows the whole life cycle: prices and total, rejection reason.
ALTER TABLE orders_view
    ADD COLUMN total_minor      bigint,
    ADD COLUMN currency         text,
    ADD COLUMN rejection_reason text,
    ADD COLUMN rejection_detail text;
