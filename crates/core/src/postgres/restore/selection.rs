//! What part of a backup a restore takes (`--table`, `--schema`, `--data-only`,
//! `--schema-only`), checked against the manifest before anything is changed.

use super::RestoreRequest;
use crate::error::{Error, Result};
use crate::repository::manifest::{Manifest, TableRows};

/// What part of a backup a restore takes, checked against the manifest.
pub(super) struct Selection {
    pub tables: Vec<(String, String)>,
    pub schemas: Vec<String>,
}

impl Selection {
    pub fn new(manifest: &Manifest, request: &RestoreRequest) -> Result<Selection> {
        if request.data_only && request.schema_only {
            return Err(Error::Usage(
                "`--data-only` and `--schema-only` exclude each other".into(),
            ));
        }
        if !request.tables.is_empty() && !request.schemas.is_empty() {
            return Err(Error::Usage(
                "give either `--table` or `--schema`, not both: `--table SCHEMA.TABLE` already names the schema"
                    .into(),
            ));
        }
        if request.data_only && manifest.options.schema_only {
            return Err(Error::Usage(format!(
                "backup `{}` is schema-only: it has no data to restore with `--data-only`",
                manifest.id
            )));
        }
        let mut tables = Vec::new();
        for qualified in &request.tables {
            let (schema, name) = qualified.split_once('.').ok_or_else(|| {
                Error::Usage(format!(
                    "table `{qualified}` must be given as `SCHEMA.TABLE`"
                ))
            })?;
            let known = manifest
                .tables
                .iter()
                .any(|t| t.schema == schema && t.name == name);
            if !known && !manifest.options.schema_only {
                return Err(Error::Missing(format!(
                    "table `{qualified}` is not in backup `{}` (names are case-sensitive): `lifeboat show {}` lists its tables",
                    manifest.id, manifest.id
                )));
            }
            tables.push((schema.to_string(), name.to_string()));
        }
        for schema in &request.schemas {
            let known = manifest.tables.iter().any(|t| &t.schema == schema);
            if !known && !manifest.options.schema_only {
                return Err(Error::Missing(format!(
                    "schema `{schema}` has no table in backup `{}` (names are case-sensitive)",
                    manifest.id
                )));
            }
        }
        Ok(Selection {
            tables,
            schemas: request.schemas.clone(),
        })
    }

    pub fn restored_tables<'m>(&self, manifest: &'m Manifest) -> Vec<&'m TableRows> {
        manifest
            .tables
            .iter()
            .filter(|t| {
                (self.tables.is_empty()
                    || self
                        .tables
                        .iter()
                        .any(|(s, n)| &t.schema == s && &t.name == n))
                    && (self.schemas.is_empty() || self.schemas.contains(&t.schema))
            })
            .collect()
    }
}
