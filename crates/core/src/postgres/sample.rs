//! Sample data for the drill and the tests: a database with every feature a dump must carry.

/// SQL that creates the sample schemas, tables and rows in an empty database.
pub const SAMPLE_SQL: &str = include_str!("sample.sql");

/// Every table of the sample with its row count, for checking a restore from outside.
pub const SAMPLE_TABLES: &[&str] = &[
    "\"Audit\".\"EventLog\"",
    "core.\"Chapter\"",
    "core.comic",
    "library.entry_2025",
    "library.entry_2026",
    "public.schema_migrations",
    "users.account",
];

/// SQL giving one fingerprint of a table's whole contents (order-independent), to compare a
/// table before a backup and after its restore.
pub fn fingerprint_sql(table: &str) -> String {
    format!("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM {table} t")
}

/// SQL giving a fingerprint of every large object.
pub const LARGE_OBJECTS_SQL: &str =
    "SELECT count(*) || ':' || coalesce(md5(string_agg(md5(lo_get(oid)), '|' ORDER BY md5(lo_get(oid)))), '') FROM pg_largeobject_metadata";
