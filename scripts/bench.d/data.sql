-- Benchmark tables for scripts/bench, in database sluice_bench.
-- psql variables: :table (wide | narrow), :rows. Deterministic: the same :rows gives the same data.
-- The primary key is added after the load (same end state, much faster), then the table is
-- frozen and analyzed so no tool pays for setting hint bits on its first read.
\set ON_ERROR_STOP 1
SET maintenance_work_mem = '1GB';
SET client_min_messages = warning;
SELECT :'table' = 'wide' AS is_wide \gset

DROP TABLE IF EXISTS public.:"table";

\if :is_wide
CREATE TABLE public.wide (
    id     bigint NOT NULL,
    i      int,
    amount numeric(12,2),
    big    numeric(38,10),
    name   varchar(64),
    note   text,
    flag   bool,
    d      date,
    ts     timestamp,
    tstz   timestamptz,
    u      uuid,
    doc    jsonb,
    f      float8
);
INSERT INTO public.wide
SELECT g,
       ((g * 7919) % 2000000000)::int - 1000000000,
       ((g * 37) % 10000000)::numeric / 100,
       ((CASE WHEN g % 3 = 0 THEN -1 ELSE 1 END) * g * 1234567.0123456789)::numeric(38,10),
       'name-' || substr(md5(g::text), 1, 8 + (g % 24)::int),
       CASE WHEN g % 10 < 3 THEN NULL ELSE 'note ' || g || ' ' || repeat('x', (g % 40)::int) END,
       g % 2 = 0,
       date '2000-01-01' + (g % 10000)::int,
       timestamp '2020-01-01' + g * interval '1 second' + (g % 1000000) * interval '1 microsecond',
       timestamptz '2020-01-01 00:00:00+00' + g * interval '1.5 second',
       md5(g::text)::uuid,
       jsonb_build_object('id', g, 'tag', 'tag' || (g % 100), 'ok', g % 2 = 0),
       g / 7.0::float8
FROM generate_series(1::bigint, :rows) AS g;
\else
CREATE TABLE public.narrow (
    id bigint NOT NULL,
    v  int,
    ts timestamp
);
INSERT INTO public.narrow
SELECT g, (g % 1000000)::int, timestamp '2020-01-01' + g * interval '1 second'
FROM generate_series(1::bigint, :rows) AS g;
\endif

ALTER TABLE public.:"table" ADD PRIMARY KEY (id);
-- Written last: a table whose generation was interrupted has no marker and is regenerated.
SELECT format('COMMENT ON TABLE public.%I IS %L', :'table', 'sluice-bench v1 rows=' || :'rows') \gexec
VACUUM (FREEZE, ANALYZE) public.:"table";
