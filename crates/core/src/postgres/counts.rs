//! Row counts of restored tables, checked against what the backup recorded.

use tokio_postgres::Client;

use crate::error::{Error, Result};
use crate::postgres::conn::quote_ident;
use crate::repository::manifest::TableRows;

/// Counts rows of the given tables in a database (after a restore, or in verification).
pub async fn count_tables(
    client: &Client,
    tables: &[&TableRows],
) -> Result<Vec<(String, Option<u64>)>> {
    let mut out = Vec::with_capacity(tables.len());
    for table in tables {
        let sql = format!(
            "SELECT count(*) FROM ONLY {}.{}",
            quote_ident(&table.schema),
            quote_ident(&table.name)
        );
        let rows = match client.query_one(&sql, &[]).await {
            Ok(row) => Some(row.get::<_, i64>(0) as u64),
            Err(e) if e.as_db_error().is_some() => None,
            Err(e) => {
                return Err(Error::postgres(
                    format!("counting rows of `{}`", table.qualified()),
                    &e,
                ))
            }
        };
        out.push((table.qualified(), rows));
    }
    Ok(out)
}
