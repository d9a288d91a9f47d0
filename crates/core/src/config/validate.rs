//! What the configuration must satisfy beyond the type of each value: ranges, and rules that
//! span several keys or sections. Each rule's message names the key and how to fix it.

use super::{Config, Timeouts};

/// The first rule `config` breaks, as a message without the file's name.
pub(super) fn validate(config: &Config) -> Result<(), String> {
    ranges(config)?;
    timeouts(config)?;
    if let Some(enc) = &config.encryption {
        if enc.recipients.is_empty() {
            return Err("`encryption.recipients` is empty: add an `age1...` public key, or remove `[encryption]`".into());
        }
        for recipient in &enc.recipients {
            crate::crypto::parse_recipient(recipient).map_err(|e| e.to_string())?;
        }
    }
    if let Some(listen) = &config.daemon.listen {
        let valid = listen.parse::<std::net::SocketAddr>().is_ok()
            || listen
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid {
            return Err(format!(
                "`daemon.listen` is `{listen}`, not an address: use `IP:PORT` or `HOST:PORT`, e.g. `127.0.0.1:10071`"
            ));
        }
    }
    let slot = &config.wal.stream_slot;
    if slot.is_empty()
        || slot.len() > 63
        || !slot
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        return Err(format!(
            "`wal.stream_slot` is `{slot}`: a replication slot's name is 1 to 63 lowercase letters, digits and underscores"
        ));
    }
    for name in &config.daemon.wal_stream {
        if !config.postgres.contains_key(name) {
            return Err(format!(
                "`daemon.wal_stream` names `{name}`, which is not a `[postgres.NAME]` section: add it, or remove the name"
            ));
        }
    }
    for (name, objects) in &config.objects {
        if objects.source.url == objects.destination.url
            && objects.source.endpoint == objects.destination.endpoint
        {
            return Err(format!(
                "`objects.{name}`: source and destination are the same bucket `{}`",
                objects.source.url
            ));
        }
    }
    copies_elsewhere(config)?;
    locks_on_s3(config)?;
    archiving_names(config)?;
    for (name, db) in &config.postgres {
        for table in &db.critical_tables {
            if table.split_once('.').is_none() {
                return Err(format!(
                    "`postgres.{name}.critical_tables` entry `{table}` must be `schema.table`"
                ));
            }
        }
    }
    Ok(())
}

/// Each copy is a location of its own: a copy at the repository's location (or another
/// copy's) would be pruned with the wrong retention, or copied onto itself.
fn copies_elsewhere(config: &Config) -> Result<(), String> {
    let repository = &config.repository;
    let mut seen = vec![(
        "the repository".to_string(),
        repository.url.to_string(),
        repository.endpoint.clone(),
    )];
    for (name, copy) in &repository.copies {
        let url = copy.url.to_string();
        if let Some((other, _, _)) = seen
            .iter()
            .find(|(_, u, endpoint)| *u == url && *endpoint == copy.endpoint)
        {
            return Err(format!(
                "`repository.copies.{name}.url` is `{url}`, the location of {other}: a copy must be somewhere else (another bucket, account or region)"
            ));
        }
        if let Some(size) = copy.part_size_mib {
            if !(5..=5120).contains(&size) {
                return Err(format!(
                    "`repository.copies.{name}.part_size_mib` is `{size}`: use 5 to 5120"
                ));
            }
        }
        seen.push((format!("copy `{}`", name), url, copy.endpoint.clone()));
    }
    Ok(())
}

/// Object Lock is S3's: a local folder cannot keep a lock, and Cloudflare R2 locks by bucket
/// rules instead.
fn locks_on_s3(config: &Config) -> Result<(), String> {
    let repository = &config.repository;
    let places = std::iter::once(("repository".to_string(), repository.clone())).chain(
        repository
            .copies
            .iter()
            .map(|(name, copy)| (format!("repository.copies.{name}"), copy.repository())),
    );
    for (section, place) in places {
        if place.object_lock.is_none() {
            continue;
        }
        if let crate::config::RepositoryUrl::Local(_) = place.url {
            return Err(format!(
                "`{section}.object_lock` is set but `{}` is a local folder: Object Lock needs an S3 bucket created with it enabled; remove `object_lock` or use an `s3://` URL",
                place.url
            ));
        }
        if place.is_r2() {
            return Err(format!(
                "`{section}.object_lock` is set but `{}` is on Cloudflare R2, which has no S3 Object Lock: remove it and set R2 bucket lock rules (`lifeboat lifecycle --locks`)",
                place.url
            ));
        }
    }
    Ok(())
}

/// Numbers within what they can be.
fn ranges(config: &Config) -> Result<(), String> {
    let level = config.compression.level;
    if !(1..=22).contains(&level) {
        return Err(format!("`compression.level` is `{level}`: use 1 to 22"));
    }
    let part_size = |key: String, size: u64| {
        if (5..=5120).contains(&size) {
            Ok(())
        } else {
            Err(format!(
                "`{key}` is `{size}`: S3 parts must be 5 to 5120 MiB"
            ))
        }
    };
    if let Some(size) = config.repository.part_size_mib {
        part_size("repository.part_size_mib".into(), size)?;
    }
    if config.repository.upload_concurrency == 0 {
        return Err("`repository.upload_concurrency` must be at least 1".into());
    }
    let r = &config.retention;
    if r.daily_days == 0 || r.pitr_days == 0 {
        return Err("`retention.daily_days` and `retention.pitr_days` must be at least 1".into());
    }
    for (name, objects) in &config.objects {
        if objects.transfers == 0 || objects.checkers == 0 {
            return Err(format!(
                "`objects.{name}.transfers` and `checkers` must be at least 1"
            ));
        }
        part_size(
            format!("objects.{name}.part_size_mib"),
            objects.part_size_mib,
        )?;
    }
    Ok(())
}

fn timeouts(config: &Config) -> Result<(), String> {
    let mut all: Vec<(String, &Timeouts)> =
        vec![("repository.timeouts".into(), &config.repository.timeouts)];
    for (name, objects) in &config.objects {
        all.push((
            format!("objects.{name}.source.timeouts"),
            &objects.source.timeouts,
        ));
        all.push((
            format!("objects.{name}.destination.timeouts"),
            &objects.destination.timeouts,
        ));
    }
    all.iter()
        .try_for_each(|(key, timeouts)| timeouts.check(key))
}

/// Several clusters archive into one repository, each under its name (`--db NAME` in its
/// `archive_command`): the name must be able to name keys.
fn archiving_names(config: &Config) -> Result<(), String> {
    for (name, _) in config.postgres.iter().filter(|(_, db)| db.pitr) {
        let plain = !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'));
        if !plain {
            return Err(format!(
                "`postgres.{name}` archives its WAL (`pitr = true`) under its name: use up to 63 letters, digits, `-` or `_`"
            ));
        }
    }
    Ok(())
}
