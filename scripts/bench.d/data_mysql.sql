-- Benchmark tables for `scripts/bench --engine mysql`, in MariaDB database sluice_bench.
-- The same tables as data.sql (PostgreSQL), with the equivalent MySQL types. scripts/bench
-- keeps the lines of the section for the table it builds (`-- [wide]`, `-- [narrow]`; `-- [*]`
-- for both) and replaces @ROWS@ with the row count. Deterministic: the same count gives the
-- same data. Rows come from MariaDB's sequence engine (seq_1_to_N) in INSERT … SELECT
-- statements of at most 5,000,000 rows in one transaction, in primary-key order, into an empty
-- table with unique and foreign-key checks off: InnoDB's bulk insert path (MariaDB >= 10.7)
-- then builds the clustered index by appending and keeps no per-row undo.
-- [*]
SET SESSION time_zone = '+00:00';
SET SESSION sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION';
SET SESSION unique_checks = 0;
SET SESSION foreign_key_checks = 0;
SET SESSION max_statement_time = 0;
DROP TABLE IF EXISTS @TABLE@;
-- [wide]
CREATE TABLE wide (
    id     bigint NOT NULL PRIMARY KEY,
    i      int,
    amount decimal(12,2),
    big    decimal(38,10),
    name   varchar(64),
    note   text,
    flag   tinyint(1),
    d      date,
    ts     datetime(6),
    tstz   timestamp(6) NULL,
    u      char(36),
    doc    json,
    f      double
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
-- [narrow]
CREATE TABLE narrow (
    id bigint NOT NULL PRIMARY KEY,
    v  int,
    ts datetime(6)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4;
-- [*]
START TRANSACTION;
-- [wide]
-- One statement per block of rows (@LO@ … @HI@ are filled in per block by scripts/bench).
-- @BLOCK@ INSERT INTO wide
-- @BLOCK@ SELECT g,
-- @BLOCK@        (g * 7919) % 2000000000 - 1000000000,
-- @BLOCK@        ((g * 37) % 10000000) / 100,
-- @BLOCK@        CAST(IF(g % 3 = 0, -1, 1) * g * 1234567.0123456789 AS DECIMAL(38,10)),
-- @BLOCK@        CONCAT('name-', SUBSTR(m, 1, 8 + g % 24)),
-- @BLOCK@        IF(g % 10 < 3, NULL, CONCAT('note ', g, ' ', REPEAT('x', g % 40))),
-- @BLOCK@        g % 2 = 0,
-- @BLOCK@        DATE '2000-01-01' + INTERVAL g % 10000 DAY,
-- @BLOCK@        TIMESTAMP '2020-01-01 00:00:00' + INTERVAL g SECOND + INTERVAL g % 1000000 MICROSECOND,
-- @BLOCK@        TIMESTAMP '2020-01-01 00:00:00' + INTERVAL g * 1500000 MICROSECOND,
-- @BLOCK@        CONCAT_WS('-', SUBSTR(m, 1, 8), SUBSTR(m, 9, 4), SUBSTR(m, 13, 4), SUBSTR(m, 17, 4), SUBSTR(m, 21, 12)),
-- @BLOCK@        CONCAT('{"id": ', g, ', "tag": "tag', g % 100, '", "ok": ', IF(g % 2 = 0, 'true', 'false'), '}'),
-- @BLOCK@        g / 7e0
-- @BLOCK@ FROM (SELECT CAST(seq AS SIGNED) AS g, MD5(seq) AS m FROM seq_@LO@_to_@HI@) AS s;
-- [narrow]
-- @BLOCK@ INSERT INTO narrow
-- @BLOCK@ SELECT g, g % 1000000, TIMESTAMP '2020-01-01 00:00:00' + INTERVAL g SECOND
-- @BLOCK@ FROM (SELECT CAST(seq AS SIGNED) AS g FROM seq_@LO@_to_@HI@) AS s;
-- [*]
COMMIT;
ANALYZE TABLE @TABLE@;
-- Written last: a table whose generation was interrupted has no marker and is regenerated.
ALTER TABLE @TABLE@ COMMENT = 'sluice-bench v1 rows=@ROWS@';
