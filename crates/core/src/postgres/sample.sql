-- A small database shaped like Yomira's, with the PostgreSQL features a dump must carry:
-- several schemas, mixed-case names, enums, domains, arrays, jsonb, bytea, generated columns,
-- a partitioned table, large objects, sequences, a materialized view and TOAST-sized text.
CREATE SCHEMA core;
CREATE SCHEMA users;
CREATE SCHEMA library;
CREATE SCHEMA "Audit";

CREATE TYPE core.comic_status AS ENUM ('ongoing', 'completed', 'hiatus');
CREATE DOMAIN core.rating AS numeric(3,1) CHECK (VALUE BETWEEN 0 AND 10);
CREATE SEQUENCE core.chapter_no START 100 INCREMENT 5;

CREATE TABLE users.account (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    "displayName" text,
    createdat timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00'
);

CREATE TABLE core.comic (
    id bigserial PRIMARY KEY,
    title text NOT NULL,
    status core.comic_status NOT NULL,
    score core.rating,
    tags text[] NOT NULL DEFAULT '{}',
    meta jsonb,
    cover bytea,
    title_upper text GENERATED ALWAYS AS (upper(title)) STORED,
    synopsis text
);

CREATE TABLE core."Chapter" (
    id bigserial PRIMARY KEY,
    comic_id bigint NOT NULL REFERENCES core.comic(id),
    "Number" integer NOT NULL DEFAULT nextval('core.chapter_no'),
    pages integer[]
);

CREATE TABLE library.entry (
    account_id bigint NOT NULL REFERENCES users.account(id),
    comic_id bigint NOT NULL REFERENCES core.comic(id),
    added date NOT NULL,
    PRIMARY KEY (account_id, comic_id, added)
) PARTITION BY RANGE (added);
CREATE TABLE library.entry_2025 PARTITION OF library.entry FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE library.entry_2026 PARTITION OF library.entry FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');

CREATE TABLE "Audit"."EventLog" (
    "Id" serial PRIMARY KEY,
    "Kind" text NOT NULL,
    payload jsonb,
    scan oid
);

CREATE TABLE public.schema_migrations (version bigint PRIMARY KEY, dirty boolean NOT NULL);

INSERT INTO users.account (email, "displayName")
SELECT 'user' || g || '@example.com', CASE WHEN g % 3 = 0 THEN NULL ELSE 'User ' || g END
FROM generate_series(1, 500) g;

INSERT INTO core.comic (title, status, score, tags, meta, cover, synopsis)
SELECT 'Comic ' || g,
       (ARRAY['ongoing', 'completed', 'hiatus'])[1 + g % 3]::core.comic_status,
       (g % 100) / 10.0,
       ARRAY['tag' || (g % 7), 'tag' || (g % 11)],
       jsonb_build_object('g', g, 'nested', jsonb_build_object('even', g % 2 = 0), 'quote', 'it''s "x"'),
       decode(md5(g::text), 'hex'),
       CASE WHEN g = 1 THEN repeat('A long synopsis that goes to TOAST. ', 20000) ELSE 'short ' || g END
FROM generate_series(1, 200) g;

INSERT INTO core."Chapter" (comic_id, pages)
SELECT 1 + g % 200, ARRAY[g, g + 1, g + 2] FROM generate_series(1, 1000) g;

INSERT INTO library.entry (account_id, comic_id, added)
SELECT 1 + g % 500, 1 + g % 200, DATE '2025-06-01' + (g % 400) FROM generate_series(1, 2000) g
ON CONFLICT DO NOTHING;

INSERT INTO "Audit"."EventLog" ("Kind", payload, scan)
VALUES ('login', '{"ip": "10.0.0.1"}', lo_from_bytea(0, '\x89504e470d0a1a0a'::bytea)),
       ('Logout', '[1, 2, 3]', NULL),
       ('tab	and
newline', '"\\u00e9t\\u00e9"', lo_from_bytea(0, convert_to(repeat('large object ', 1000), 'UTF8')));

INSERT INTO public.schema_migrations VALUES (42, false);

CREATE MATERIALIZED VIEW core.comic_stats AS
SELECT status, count(*) AS comics, avg(score) AS avg_score FROM core.comic GROUP BY status;

SELECT setval('core.chapter_no', 5000);
