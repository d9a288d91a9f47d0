//! The configuration file: where it is found, how it is read, and the lookups the engine makes
//! in it (which database, which object backup, which jobs).
//!
//! Values are checked while the TOML is read, into typed values ([`values`]), so an error
//! names the key and the line (unknown keys, a missing environment variable, a malformed URL,
//! an unknown storage class, a bad schedule or step); what spans several keys is checked after
//! ([`validate`]). This module depends on nothing else of lifeboat's but its errors and the
//! recipient check of [`crate::crypto`]: every other module reads its configuration from here.

mod expand;
mod job;
mod schedule;
mod secrets;
mod sections;
mod validate;
mod values;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

pub use expand::expand_env;
pub use job::{default_jobs, JobConfig, Step, StepKind};
pub use schedule::Schedule;
pub use sections::{
    BucketConfig, CompressionConfig, DaemonConfig, EncryptionConfig, NotifyConfig, Objectives,
    ObjectsConfig, PostgresConfig, RedisConfig, RepositoryConfig, RetentionConfig, StorageClasses,
    ToolsConfig, WalConfig,
};
pub use values::{
    redact_url, split_tls_verification, url_has_password, BucketUrl, LockMode, PgUrl,
    RepositoryUrl, S3Access, Secret, TimeZone, Timeouts, STORAGE_CLASSES,
};

/// Where the configuration came from, for messages and for resolving relative paths.
#[derive(Debug, Clone, Default, Serialize)]
pub enum ConfigSource {
    File(PathBuf),
    /// No file: the embedded default (a local repository `./lifeboat-repo`).
    #[default]
    Default,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub repository: RepositoryConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub encryption: Option<EncryptionConfig>,
    pub compression: CompressionConfig,
    pub tools: ToolsConfig,
    pub wal: WalConfig,
    pub postgres: BTreeMap<String, PostgresConfig>,
    pub objects: BTreeMap<String, ObjectsConfig>,
    pub retention: RetentionConfig,
    pub objectives: Objectives,
    /// Named jobs for `run` and the daemon; unset: `daily` and `weekly` as in the guide.
    pub jobs: BTreeMap<String, JobConfig>,
    pub notify: NotifyConfig,
    pub daemon: DaemonConfig,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisConfig>,
    #[serde(skip)]
    pub source: ConfigSource,
}

impl Config {
    /// The zone a moment typed without an offset is taken in: `[daemon] time_zone`, else
    /// `[retention] time_zone`, where the configuration names one; else the system's.
    pub fn typed_time_zone(&self) -> TimeZone {
        [&self.daemon.time_zone, &self.retention.time_zone]
            .into_iter()
            .find(|zone| zone.is_configured())
            .cloned()
            .unwrap_or_else(TimeZone::system)
    }

    /// Finds and reads the configuration: `explicit` (from `--config`), else `$LIFEBOAT_CONFIG`,
    /// else `./lifeboat.toml`, else the embedded default.
    pub fn load(explicit: Option<&Path>) -> Result<Config> {
        let from_env = std::env::var_os("LIFEBOAT_CONFIG").map(PathBuf::from);
        let path = match (explicit, from_env) {
            (Some(path), _) => Some(path.to_path_buf()),
            (None, Some(path)) if !path.as_os_str().is_empty() => Some(path),
            _ => {
                let local = PathBuf::from("lifeboat.toml");
                local.exists().then_some(local)
            }
        };
        let Some(path) = path else {
            let mut config = Config::default();
            if let (RepositoryUrl::Local(local), Ok(cwd)) =
                (&config.repository.url, std::env::current_dir())
            {
                config.repository.url = RepositoryUrl::Local(cwd.join(local));
            }
            return Ok(config);
        };
        let text = std::fs::read_to_string(&path).map_err(|e| {
            Error::Config(format!(
                "cannot read config `{}`: {}",
                path.display(),
                e.to_string().to_lowercase()
            ))
        })?;
        Config::parse(&text, &path)
    }

    /// Parses configuration text; `path` names it in errors and anchors relative paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        // Every unset variable and unreadable secret file at once, before anything else: the
        // first with its line (read again, failing there), then the others.
        let (parsed, missing) = expand::collecting(|| toml::from_str::<Config>(text));
        let parsed = match (parsed, missing.len()) {
            (parsed, 0) => parsed,
            (_, n) => {
                let first = match toml::from_str::<Config>(text) {
                    Err(e) => Self::located(&e, text, path),
                    Ok(_) => format!("config `{}`: {}", path.display(), missing[0]),
                };
                let others = missing
                    .iter()
                    .filter(|m| !first.contains(m.as_str()))
                    .cloned()
                    .collect::<Vec<_>>();
                return Err(Error::Config(if n == 1 || others.is_empty() {
                    first
                } else {
                    format!("{first}; also: {}", others.join("; "))
                }));
            }
        };
        let mut config: Config =
            parsed.map_err(|e| Error::Config(Self::located(&e, text, path)))?;
        let base = path.parent().unwrap_or(Path::new(""));
        let urls = std::iter::once(&mut config.repository.url)
            .chain(config.repository.copies.values_mut().map(|c| &mut c.url));
        for url in urls {
            if let RepositoryUrl::Local(local) = url {
                if local.is_relative() {
                    *url = RepositoryUrl::Local(base.join(&*local));
                }
            }
        }
        config.source = ConfigSource::File(path.to_path_buf());
        config
            .take_secret_files()
            .map_err(|message| Error::Config(format!("config `{}`: {message}", path.display())))?;
        validate::validate(&config).map_err(|message| {
            Error::Config(format!("config `{}`: {message}", config.source_name()))
        })?;
        Ok(config)
    }

    /// A parse error as one line, with the line of the file it is on.
    fn located(e: &toml::de::Error, text: &str, path: &Path) -> String {
        let line = e
            .span()
            .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
        let message = crate::error::one_line(e.message());
        match line {
            Some(line) => format!("config `{}` line {line}: {message}", path.display()),
            None => format!("config `{}`: {message}", path.display()),
        }
    }

    /// Moves the secrets read from `*_file` keys to their keys.
    fn take_secret_files(&mut self) -> std::result::Result<(), String> {
        use secrets::one_secret;
        self.repository.take_secret_files("repository")?;
        for (name, copy) in &mut self.repository.copies {
            copy.take_secret_files(&format!("repository.copies.{name}"))?;
        }
        for (name, objects) in &mut self.objects {
            objects
                .source
                .take_secret_files(&format!("objects.{name}.source"))?;
            objects
                .destination
                .take_secret_files(&format!("objects.{name}.destination"))?;
        }
        for (name, pg) in &mut self.postgres {
            one_secret(&mut pg.password, &mut pg.password_file, "password")
                .map_err(|e| format!("[postgres.{name}]: {e}"))?;
        }
        let notify = &mut self.notify;
        let in_notify = |e: String| format!("[notify]: {e}");
        one_secret(
            &mut notify.slack_webhook,
            &mut notify.slack_webhook_file,
            "slack_webhook",
        )
        .map_err(in_notify)?;
        one_secret(&mut notify.webhook, &mut notify.webhook_file, "webhook").map_err(in_notify)?;
        one_secret(
            &mut notify.healthcheck,
            &mut notify.healthcheck_file,
            "healthcheck",
        )
        .map_err(in_notify)?;
        if let Some(redis) = &mut self.redis {
            one_secret(&mut redis.password, &mut redis.password_file, "password")
                .map_err(|e| format!("[redis]: {e}"))?;
        }
        Ok(())
    }

    pub fn source_name(&self) -> String {
        match &self.source {
            ConfigSource::File(path) => path.display().to_string(),
            ConfigSource::Default => "(embedded default)".into(),
        }
    }

    /// The database section to use: `name` if given, else the only one configured.
    pub fn database(&self, name: Option<&str>) -> Result<(&str, &PostgresConfig)> {
        self.section(
            &self.postgres,
            name,
            ["database", "databases"],
            "a `[postgres.NAME]` section with `url = \"postgresql://...\"`",
            "--db NAME",
        )
    }

    /// The object backup section to use: `name` if given, else the only one configured.
    pub fn objects(&self, name: Option<&str>) -> Result<(&str, &ObjectsConfig)> {
        self.section(
            &self.objects,
            name,
            ["object backup", "object backups"],
            "an `[objects.NAME]` section with `source` and `destination`",
            "--name NAME",
        )
    }

    /// Section `name` of `sections`, else the only one; the errors say what is configured.
    fn section<'a, T>(
        &self,
        sections: &'a BTreeMap<String, T>,
        name: Option<&str>,
        [what, whats]: [&str; 2],
        how_to_add: &str,
        flag: &str,
    ) -> Result<(&'a str, &'a T)> {
        let names = || {
            if sections.is_empty() {
                return "none".to_string();
            }
            let names: Vec<String> = sections.keys().map(|k| format!("`{k}`")).collect();
            names.join(", ")
        };
        if let Some(name) = name {
            return sections
                .get_key_value(name)
                .map(|(k, v)| (k.as_str(), v))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "{what} `{name}` is not configured in `{}`: configured are {}",
                        self.source_name(),
                        names()
                    ))
                });
        }
        let mut all = sections.iter();
        match (all.next(), all.next()) {
            (Some((k, v)), None) => Ok((k.as_str(), v)),
            (None, _) => Err(Error::Config(format!(
                "no {what} configured in `{}`: add {how_to_add}",
                self.source_name()
            ))),
            _ => Err(Error::Usage(format!(
                "several {whats} are configured ({}): choose one with `{flag}`",
                names()
            ))),
        }
    }

    /// The configuration as seen from copy `name`: its location is the repository, its
    /// retention (else `[retention]`) the retention; it has no object backups and no copies
    /// of its own.
    pub fn for_copy(&self, name: &str) -> Result<Config> {
        let copy = self.repository.copies.get(name).ok_or_else(|| {
            let names: Vec<String> = self
                .repository
                .copies
                .keys()
                .map(|k| format!("`{k}`"))
                .collect();
            Error::Config(format!(
                "copy `{name}` is not configured in `{}`: configured are {} (`[repository.copies.NAME]`)",
                self.source_name(),
                if names.is_empty() { "none".into() } else { names.join(", ") }
            ))
        })?;
        let mut config = self.clone();
        config.repository = copy.repository();
        if let Some(retention) = &copy.retention {
            config.retention = retention.clone();
        }
        config.objects.clear();
        Ok(config)
    }

    /// The jobs: the configured ones, else the guide's `daily` and `weekly`.
    pub fn jobs(&self) -> BTreeMap<String, JobConfig> {
        if self.jobs.is_empty() {
            default_jobs()
        } else {
            self.jobs.clone()
        }
    }

    /// The configuration as TOML with every secret replaced by `***`.
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self)
            .unwrap_or_else(|e| format!("# cannot display the configuration: {e}\n"))
    }
}

#[cfg(test)]
mod tests;
