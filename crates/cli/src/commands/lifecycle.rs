//! The bucket's own rules: `lifecycle`, the lifecycle rules lifeboat wants, printed (with
//! `--apply`, merged with the bucket's own rules, kept as they are, and written); `lifecycle
//! --locks` / `--check-locks`, R2's bucket lock rules from the policy, and a bucket's checked;
//! `undelete`, what a leaked key hid behind delete markers in a bucket that keeps versions.

use lifeboat_core::config::RepositoryUrl;
use lifeboat_core::retention::r2;
use lifeboat_core::storage::s3::lifecycle;
use lifeboat_core::storage::Storage;
use lifeboat_core::{Context, Error, Result};

use crate::output::{print_json, print_json_or};

pub async fn lifecycle(ctx: &Context, apply: bool, json: bool) -> Result<()> {
    let config = &ctx.config.repository;
    let RepositoryUrl::S3 { prefix, .. } = &config.url else {
        return Err(Error::Usage(format!(
            "lifecycle rules are for S3 repositories; `{}` is a local folder (prune keeps it tidy)",
            config.url
        )));
    };
    let bucket = Storage::open(config, false, &ctx.storage_env())?;
    let bucket_name = bucket.location().to_string();
    let wanted = lifecycle::wanted(prefix);
    let existing = match bucket.lifecycle(None).await {
        Ok(None) => Some(lifecycle::Configuration::default()),
        Ok(Some(xml)) => {
            match lifecycle::Configuration::parse(&xml) {
                Ok(config) => Some(config),
                Err(reason) if apply => {
                    return Err(Error::Usage(format!(
                        "the lifecycle configuration of `{bucket_name}` is {reason}: refusing to replace what cannot be read; merge the printed rules by hand"
                    )))
                }
                Err(reason) => {
                    tracing::warn!("the bucket's lifecycle configuration is {reason}");
                    None
                }
            }
        }
        Err(e) if apply => return Err(e),
        Err(e) => {
            tracing::warn!("cannot read the bucket's lifecycle rules to check them: {e}");
            None
        }
    };
    if let Some(config) = &existing {
        for warning in config.conflicts(prefix) {
            tracing::warn!("{warning}");
        }
    }
    if config.is_r2() {
        tracing::info!("R2 locks by bucket rules, not S3 Object Lock: `lifeboat lifecycle --locks` prints the rules that match the policy");
    }
    if !apply {
        tracing::info!("lifeboat expires nothing by age: prune knows what each backup still needs; these rules only clean up after killed uploads and old noncurrent versions");
        return print_json(&lifecycle::to_aws_json(&wanted));
    }
    let config = existing.unwrap_or_default();
    bucket.lifecycle(Some(config.merged_xml(&wanted))).await?;
    let kept = config
        .rules
        .iter()
        .filter(|r| !r.id().starts_with(lifecycle::ID_PREFIX))
        .count();
    tracing::info!(
        "applied {} lifecycle rules to `{bucket_name}`: lifeboat's {}, and the bucket's other {kept} as they were",
        kept + wanted.len(),
        wanted.len()
    );
    print_json_or(json, &config.merged_aws_json(&wanted), || "applied".into())
}

/// `lifecycle --locks [--check-locks FILE]`: the Cloudflare R2 bucket lock rules that match
/// the policy, printed; or a bucket's rules checked against it (problems fail the command).
pub fn locks(ctx: &Context, check: Option<&std::path::Path>, json: bool) -> Result<()> {
    let config = &ctx.config.repository;
    let RepositoryUrl::S3 { bucket, prefix } = &config.url else {
        return Err(Error::Usage(format!(
            "bucket lock rules are for S3 repositories; `{}` is a local folder",
            config.url
        )));
    };
    let policy = lifeboat_core::retention::Policy::from(&ctx.config.retention);
    let wanted = r2::r2_rules(&policy, prefix);
    let Some(path) = check else {
        tracing::info!(
            "R2 bucket lock rules for `{}`: save them to a file and set them with `npx wrangler r2 bucket lock set {bucket} --file FILE` (this replaces the bucket's rules: merge any of your own first)",
            config.url
        );
        return print_json(&wanted);
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::io(format!("reading `{}` (--check-locks)", path.display()), e))?;
    let rules = r2::R2Rules::parse(&text).map_err(|e| {
        Error::Usage(format!(
            "`{}` is {e}; save the output of the Cloudflare API's `GET .../r2/buckets/{bucket}/lock`",
            path.display()
        ))
    })?;
    let (problems, notes) = r2::r2_conflicts(&rules, &policy, prefix);
    for note in &notes {
        tracing::warn!("{note}");
    }
    for problem in &problems {
        tracing::error!("{problem}");
    }
    if json {
        print_json(&serde_json::json!({ "problems": problems, "notes": notes, "wanted": wanted }))?;
    }
    match problems.first() {
        None => {
            if !json {
                crate::output::emit(&format!(
                    "the R2 lock rules in `{}` fit the policy{}\n",
                    path.display(),
                    if notes.is_empty() {
                        String::new()
                    } else {
                        format!(" ({} notes above)", notes.len())
                    }
                ))?;
            }
            Ok(())
        }
        Some(first) => Err(Error::Config(format!(
            "{first}{}",
            if problems.len() > 1 {
                format!(" (and {} more problems above)", problems.len() - 1)
            } else {
                String::new()
            }
        ))),
    }
}

/// What `undelete` looks at: the marker and every backup, manifest and WAL file (never the
/// run lock, doctor's probes or verification records, which lifeboat deletes itself).
const RECOVERABLE: [&str; 4] = ["lifeboat.json", "manifests/", "data/", "wal/"];

/// `undelete`: the repository's objects hidden behind delete markers, shown again.
pub async fn undelete(ctx: &Context, dry_run: bool, json: bool) -> Result<()> {
    let env = if dry_run {
        ctx.storage_env().dry()
    } else {
        ctx.storage_env()
    };
    // Not opened as a repository: its marker may be what is hidden.
    let storage = Storage::open(&ctx.config.repository, false, &env)?;
    if storage.is_local() {
        return Err(Error::Usage(format!(
            "`undelete` is for S3 buckets that keep versions; `{}` is a local folder",
            storage.location()
        )));
    }
    let mut hidden = Vec::new();
    for prefix in RECOVERABLE {
        hidden.extend(storage.backend().hidden(prefix, !dry_run).await?);
    }
    let backups = hidden
        .iter()
        .filter(|k| k.starts_with("manifests/"))
        .count();
    tracing::info!(
        "{} objects of `{}` were hidden behind delete markers ({backups} backups){}",
        hidden.len(),
        storage.location(),
        if dry_run || hidden.is_empty() {
            ""
        } else {
            ": shown again"
        }
    );
    print_json_or(
        json,
        &serde_json::json!({ "dry_run": dry_run, "hidden": hidden, "backups": backups }),
        || {
            hidden
                .iter()
                .map(|k| format!("{} {k}", if dry_run { "hidden" } else { "shown" }))
                .collect::<Vec<_>>()
                .join("\n")
        },
    )
}
