-- A database whose contents compress like user content (about 2.5x with gzip -9), unlike
-- pgbench's filler: text from a vocabulary of 400 made-up words, jsonb settings, md5 tokens,
-- timestamps, arrays; primary keys, foreign keys and a few indexes.
--
-- Usage: psql -v rows=1000000 -f scripts/realistic.sql DBNAME   (rows: comments; about 400 bytes
-- each on disk with the other tables and indexes: 1000000 rows is about 0.5 GB)
\set ON_ERROR_STOP on
SELECT setseed(0.42);

-- Word number j (1 to 400) of the vocabulary: arithmetic, no lookup (fast to generate).
CREATE FUNCTION pg_temp.word(j int) RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT left(translate(to_hex((j::bigint * 2654435761) % 4294967296), '0123456789abcdef',
                          'etaoinshrdlucmfw'), 2 + j % 7)
$$;

-- n words: (SELECT string_agg(pg_temp.word(1 + (random() * 399)::int + 0 * k), ' ') FROM generate_series(1, n) k)

CREATE TABLE account (
    id bigserial PRIMARY KEY,
    email text NOT NULL UNIQUE,
    display_name text,
    settings jsonb NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO account (email, display_name, settings, created_at)
SELECT 'user' || g || '@' || (ARRAY['example.com', 'mail.test', 'yomira.dev'])[1 + g % 3],
       CASE WHEN g % 4 = 0 THEN NULL ELSE (SELECT string_agg(pg_temp.word(1 + (random() * 399)::int + 0 * k), ' ') FROM generate_series(1, 2) k) END,
       jsonb_build_object('theme', (ARRAY['dark', 'light', 'sepia'])[1 + g % 3],
                          'lang', (ARRAY['en', 'vi', 'ja', 'ko'])[1 + g % 4],
                          'notify', g % 2 = 0, 'page_size', 20 + g % 5 * 10),
       timestamptz '2024-01-01' + g * interval '7 minutes'
FROM generate_series(1, greatest(:rows / 20, 10)) g;

CREATE TABLE comic (
    id bigserial PRIMARY KEY,
    account_id bigint NOT NULL REFERENCES account (id),
    title text NOT NULL,
    synopsis text,
    tags text[] NOT NULL,
    cover_hash text NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz
);
INSERT INTO comic (account_id, title, synopsis, tags, cover_hash, created_at, updated_at)
SELECT 1 + (random() * (greatest(:rows / 20, 10) - 1))::int,
       initcap((SELECT string_agg(pg_temp.word(1 + (random() * 399)::int + 0 * k), ' ') FROM generate_series(1, 2 + g % 4) k)),
       (SELECT string_agg(pg_temp.word(1 + (random() * 399)::int + 0 * k), ' ') FROM generate_series(1, 30 + g % 90) k),
       ARRAY[pg_temp.word(1 + g % 40), pg_temp.word(1 + g % 17)],
       md5(g::text),
       timestamptz '2024-01-01' + g * interval '13 minutes',
       CASE WHEN g % 3 = 0 THEN NULL ELSE timestamptz '2025-01-01' + g * interval '11 minutes' END
FROM generate_series(1, greatest(:rows / 10, 10)) g;
CREATE INDEX comic_account ON comic (account_id);
CREATE INDEX comic_created ON comic (created_at);

CREATE TABLE comment (
    id bigserial PRIMARY KEY,
    comic_id bigint NOT NULL REFERENCES comic (id),
    account_id bigint NOT NULL REFERENCES account (id),
    body text NOT NULL,
    token text NOT NULL,
    likes int NOT NULL,
    created_at timestamptz NOT NULL
);
INSERT INTO comment (comic_id, account_id, body, token, likes, created_at)
SELECT 1 + (random() * (greatest(:rows / 10, 10) - 1))::int,
       1 + (random() * (greatest(:rows / 20, 10) - 1))::int,
       (SELECT string_agg(pg_temp.word(1 + (random() * 399)::int + 0 * k), ' ') FROM generate_series(1, 5 + g % 50) k),
       md5(random()::text),
       (random() * 500)::int,
       timestamptz '2024-06-01' + g * interval '17 seconds'
FROM generate_series(1, :rows) g;
CREATE INDEX comment_comic ON comment (comic_id, created_at);
ANALYZE;
