-- Gold example: daily order revenue per currency from the shop sample's orders.
--
-- Called by sluice once per batch that merged public.orders (infra/config/shop.yaml lists it
-- under gold:, with orders as its input) as CALL GOLD.REFRESH_DAILY_REVENUE('<batch id>'),
-- after every input of the batch merged. The argument keeps its old name, RUN_ID. It rebuilds the
-- whole fact from STAGING, so it is idempotent and an order that moved from one day to
-- another is counted once, on its current day. Cancelled orders earn nothing. Days are UTC
-- (sluice lands timestamptz values as UTC instants).
--
-- Run once in the database sluice loads into (objects are named relative to it). The body
-- keeps to the Snowflake Scripting subset the local stand-in runs: statements, :RUN_ID, RETURN.

CREATE SCHEMA IF NOT EXISTS GOLD;

CREATE TABLE IF NOT EXISTS GOLD.DAILY_ORDER_REVENUE (
    ORDER_DATE DATE,
    CURRENCY VARCHAR,
    ORDERS NUMBER(19,0),
    REVENUE NUMBER(38,2),
    REFRESHED_BY_RUN VARCHAR
);

CREATE OR REPLACE PROCEDURE GOLD.REFRESH_DAILY_REVENUE(RUN_ID VARCHAR)
RETURNS VARIANT
LANGUAGE SQL
EXECUTE AS OWNER
AS $$
BEGIN
DELETE FROM GOLD.DAILY_ORDER_REVENUE;
INSERT INTO GOLD.DAILY_ORDER_REVENUE (ORDER_DATE, CURRENCY, ORDERS, REVENUE, REFRESHED_BY_RUN)
    SELECT CAST("ordered_at" AS DATE), "currency", COUNT(*), SUM("total"), :RUN_ID
    FROM STAGING.SHOP_ORDERS
    WHERE "status" <> 'cancelled'
    GROUP BY CAST("ordered_at" AS DATE), "currency";
RETURN (SELECT OBJECT_CONSTRUCT('days', DAYS, 'rows', ROWS_WRITTEN)
        FROM (SELECT COUNT(DISTINCT ORDER_DATE) AS DAYS, COUNT(*) AS ROWS_WRITTEN FROM GOLD.DAILY_ORDER_REVENUE));
END;
$$;
