//! Session settings that speed up a restore's index builds, chosen from the target server's
//! own settings and passed to the restoring session through `PGOPTIONS`.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::error::{Error, Result};

/// The server's settings a choice depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Server {
    /// `maintenance_work_mem`, in kB.
    pub maintenance_work_mem_kb: i64,
    /// `shared_buffers`, in kB: a cautious stand-in for the memory the server was given.
    pub shared_buffers_kb: i64,
    pub max_parallel_workers: i64,
}

impl Server {
    pub(super) async fn read(client: &Client) -> Result<Self> {
        let row = client
            .query_one(
                "SELECT pg_size_bytes(current_setting('maintenance_work_mem')) / 1024, \
                        pg_size_bytes(current_setting('shared_buffers')) / 1024, \
                        current_setting('max_parallel_workers')::bigint",
                &[],
            )
            .await
            .map_err(|e| Error::postgres("reading the target server's settings", &e))?;
        Ok(Server {
            maintenance_work_mem_kb: row.get(0),
            shared_buffers_kb: row.get(1),
            max_parallel_workers: row.get(2),
        })
    }
}

/// The restore's settings: index builds sort in up to `shared_buffers` (at most 1 GB, never
/// less than the server's own `maintenance_work_mem`), and with `jobs` above 1 each index
/// build uses `jobs - 1` parallel workers (at most the server's `max_parallel_workers`). One
/// job leaves the server's worker setting alone.
pub(super) fn choose(server: Server, jobs: u32) -> BTreeMap<String, String> {
    const GIB_KB: i64 = 1 << 20;
    let mut settings = BTreeMap::new();
    let memory = server
        .shared_buffers_kb
        .min(GIB_KB)
        .max(server.maintenance_work_mem_kb);
    settings.insert("maintenance_work_mem".into(), format!("{memory}kB"));
    if jobs > 1 {
        let workers = i64::from(jobs - 1).min(server.max_parallel_workers).max(0);
        settings.insert(
            "max_parallel_maintenance_workers".into(),
            workers.to_string(),
        );
    }
    settings
}

/// `settings` as `PGOPTIONS`, after whatever the environment already asks for.
pub(super) fn pgoptions(settings: &BTreeMap<String, String>) -> String {
    let mut options = std::env::var("PGOPTIONS").unwrap_or_default();
    for (name, value) in settings {
        if !options.is_empty() {
            options.push(' ');
        }
        options.push_str(&format!("-c {name}={value}"));
    }
    options
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_servers_memory_and_workers() {
        let small = Server {
            maintenance_work_mem_kb: 65536,
            shared_buffers_kb: 131072,
            max_parallel_workers: 8,
        };
        let chosen = choose(small, 4);
        assert_eq!(chosen["maintenance_work_mem"], "131072kB");
        assert_eq!(chosen["max_parallel_maintenance_workers"], "3");
        // One job: the server's workers setting stays as it is.
        assert!(!choose(small, 1).contains_key("max_parallel_maintenance_workers"));
        // A large server: capped at 1 GB; a generous maintenance_work_mem is kept.
        let large = Server {
            maintenance_work_mem_kb: 64 << 10,
            shared_buffers_kb: 16 << 20,
            max_parallel_workers: 2,
        };
        let chosen = choose(large, 8);
        assert_eq!(chosen["maintenance_work_mem"], format!("{}kB", 1 << 20));
        assert_eq!(chosen["max_parallel_maintenance_workers"], "2");
        let generous = Server {
            maintenance_work_mem_kb: 2 << 20,
            ..large
        };
        assert_eq!(
            choose(generous, 1)["maintenance_work_mem"],
            format!("{}kB", 2 << 20)
        );
        let options = pgoptions(&choose(small, 2));
        assert!(
            options.ends_with(
                "-c maintenance_work_mem=131072kB -c max_parallel_maintenance_workers=1"
            ),
            "{options}"
        );
    }
}
