//! What every backup shares: where its data goes and how it is sealed and uploaded.

use crate::pipeline::{SealOptions, StreamStats, UploadTarget};
use crate::repository::manifest::{
    self, BackupKind, BaseInfo, Compression, DumpOptions, Encryption, Manifest, TableRows,
};
use crate::repository::Repository;
use crate::Context;

/// Budget for parts buffered or in flight during an upload.
const UPLOAD_MEMORY: u64 = 128 << 20;
const MIN_PART: u64 = 8 << 20;
/// Stay clear of S3's 10,000-part limit.
const MAX_PARTS: u64 = 9_000;

/// Part size and concurrency for an upload of at most `estimate` bytes.
pub fn part_plan(estimate: u64, configured_mib: Option<u64>, concurrency: usize) -> (usize, usize) {
    let part = match configured_mib {
        Some(mib) => mib << 20,
        None => {
            let needed = estimate.div_ceil(MAX_PARTS);
            needed.div_ceil(1 << 20).max(MIN_PART >> 20) << 20
        }
    };
    let fits = (UPLOAD_MEMORY / part).max(1) as usize;
    (part as usize, concurrency.min(fits).max(1))
}

/// What a backup is, as its taker knows it; [`DataPlan::manifest`] adds what was stored.
#[derive(Debug, Clone)]
pub struct About {
    pub id: String,
    pub kind: BackupKind,
    pub database: String,
    pub dbname: String,
    pub options: DumpOptions,
    pub server_version: String,
    pub client_version: String,
    pub started_at: jiff::Timestamp,
    pub tables: Vec<TableRows>,
    pub base: Option<BaseInfo>,
}

/// Where and how one backup's data is stored.
#[derive(Debug, Clone)]
pub struct DataPlan {
    pub data: String,
    pub encryption: Option<Encryption>,
    pub storage_class: Option<String>,
    pub seal: SealOptions,
    pub part_size: usize,
    pub concurrency: usize,
}

impl DataPlan {
    /// The plan for backup `id` of `kind`, whose data is at most `estimate` bytes, compressed
    /// with `threads` zstd workers (0: the configured number).
    pub fn new(ctx: &Context, kind: BackupKind, id: &str, estimate: u64, threads: u32) -> DataPlan {
        let encryption = ctx.config.encryption.as_ref().map(|e| Encryption {
            algorithm: "age".into(),
            recipients: e.recipients.clone(),
        });
        let repo = &ctx.config.repository;
        let (part_size, concurrency) =
            part_plan(estimate, repo.part_size_mib, repo.upload_concurrency);
        let storage_class = match kind {
            BackupKind::Db | BackupKind::Redis => repo.storage_class.db.clone(),
            BackupKind::Base => repo.storage_class.base.clone(),
        };
        DataPlan {
            data: crate::repository::layout::data(kind, id, encryption.is_some()),
            seal: SealOptions {
                level: ctx.config.compression.level,
                threads: if threads == 0 {
                    ctx.config.compression.threads
                } else {
                    threads
                },
                recipients: encryption
                    .as_ref()
                    .map(|e| e.recipients.clone())
                    .unwrap_or_default(),
                framing: (kind == BackupKind::Base)
                    .then(|| std::sync::Arc::new(crate::tarchunk::TarChunks) as _),
            },
            encryption,
            storage_class,
            part_size,
            concurrency,
        }
    }

    /// The manifest of the backup this plan stored: what it is (`about`) and what was stored.
    pub fn manifest(&self, about: About, stats: StreamStats) -> Manifest {
        Manifest {
            format: manifest::MANIFEST_FORMAT,
            id: about.id,
            kind: about.kind,
            database: about.database,
            dbname: about.dbname,
            options: about.options,
            server_version: about.server_version,
            client_version: about.client_version,
            started_at: about.started_at,
            finished_at: jiff::Timestamp::now(),
            data: self.data.clone(),
            raw_size: stats.raw_size,
            stored_size: stats.stored_size,
            sha256: stats.sha256,
            compression: Compression {
                algorithm: "zstd".into(),
                level: self.seal.level,
            },
            encryption: self.encryption.clone(),
            storage_class: self.storage_class.clone(),
            tool_version: env!("CARGO_PKG_VERSION").into(),
            tables: about.tables,
            base: about.base,
            tier: None,
            globals: None,
            backup_manifest: None,
        }
    }

    /// Streams a child's output (a backup tool's) through the pipeline into this plan's data,
    /// as progress task `task`; the child is killed if the upload stops early.
    pub async fn upload_from(
        &self,
        ctx: &Context,
        repo: &Repository,
        task: &str,
        source: crate::process::ChildReader,
    ) -> crate::Result<StreamStats> {
        let killer = source.killer();
        self.upload_reader(ctx, repo, task, source, move || killer.kill())
            .await
    }

    /// [`DataPlan::upload_from`] for any reader; `stop` stops what feeds it.
    pub async fn upload_reader(
        &self,
        ctx: &Context,
        repo: &Repository,
        task: &str,
        source: impl std::io::Read + Send + 'static,
        stop: impl FnOnce(),
    ) -> crate::Result<StreamStats> {
        let task = ctx.progress.start(task, None);
        crate::pipeline::upload(
            repo.storage(),
            self.target(),
            source,
            stop,
            self.seal.clone(),
            task,
            &ctx.cancel,
        )
        .await
    }

    pub fn target(&self) -> UploadTarget<'_> {
        UploadTarget {
            path: &self.data,
            storage_class: self.storage_class.as_deref(),
            part_size: self.part_size,
            concurrency: self.concurrency,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stay_under_the_limit_and_memory_bounded() {
        // Small database: minimum part, full concurrency.
        assert_eq!(part_plan(1 << 20, None, 4), (8 << 20, 4));
        // 500 GiB: parts grow so that 9,000 of them hold it; concurrency shrinks.
        let (part, conc) = part_plan(500 << 30, None, 4);
        assert!(part as u64 * MAX_PARTS >= 500 << 30);
        assert_eq!(part % (1 << 20), 0);
        assert!(part as u64 * conc as u64 <= UPLOAD_MEMORY.max(part as u64));
        // Configured size wins.
        assert_eq!(part_plan(1 << 40, Some(64), 4).0, 64 << 20);
    }
}
