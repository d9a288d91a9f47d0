//! Jobs: named lists of steps, run in order, on a schedule. The steps are checked as the file
//! is read and kept as [`Step`]s; a job without any configured is the guide's `daily` or
//! `weekly`.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::expand::expand;
use super::schedule::Schedule;

/// What kind of backup a `verify` step verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepKind {
    Db,
    Base,
}

/// One step of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    BackupDb(Option<String>),
    /// A base backup; `true`: an incremental (`backup base --incremental [NAME]`).
    BackupBase(Option<String>, bool),
    BackupObjects(Option<String>),
    BackupRedis,
    /// Copy to every copy of the repository (or the one named).
    Copy(Option<String>),
    Prune,
    Verify(Option<StepKind>),
}

impl Step {
    pub fn parse(text: &str) -> Result<Step, String> {
        let words: Vec<&str> = text.split_whitespace().collect();
        let name = |i: usize| words.get(i).map(|s| s.to_string());
        match words.as_slice() {
            ["backup", "db", ..] if words.len() <= 3 => Ok(Step::BackupDb(name(2))),
            ["backup", "base", "--incremental", ..] if words.len() <= 4 => {
                Ok(Step::BackupBase(name(3), true))
            }
            ["backup", "base", ..] if words.len() <= 3 => Ok(Step::BackupBase(name(2), false)),
            ["backup", "objects", ..] if words.len() <= 3 => Ok(Step::BackupObjects(name(2))),
            ["backup", "redis"] => Ok(Step::BackupRedis),
            ["copy", ..] if words.len() <= 2 => Ok(Step::Copy(name(1))),
            ["prune"] => Ok(Step::Prune),
            ["verify"] => Ok(Step::Verify(None)),
            ["verify", "db"] => Ok(Step::Verify(Some(StepKind::Db))),
            ["verify", "base"] => Ok(Step::Verify(Some(StepKind::Base))),
            _ => Err(format!(
                "unknown step `{text}`: use `backup db [NAME]`, `backup base [--incremental] [NAME]`, `backup objects [NAME]`, `backup redis`, `copy [NAME]`, `prune` or `verify [db|base]`"
            )),
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let named = |f: &mut fmt::Formatter<'_>, what: &str, name: &Option<String>| match name {
            Some(name) => write!(f, "{what} {name}"),
            None => f.write_str(what),
        };
        match self {
            Step::BackupDb(name) => named(f, "backup db", name),
            Step::BackupBase(name, false) => named(f, "backup base", name),
            Step::BackupBase(name, true) => named(f, "backup base --incremental", name),
            Step::BackupObjects(name) => named(f, "backup objects", name),
            Step::BackupRedis => f.write_str("backup redis"),
            Step::Copy(name) => named(f, "copy", name),
            Step::Prune => f.write_str("prune"),
            Step::Verify(None) => f.write_str("verify"),
            Step::Verify(Some(StepKind::Db)) => f.write_str("verify db"),
            Step::Verify(Some(StepKind::Base)) => f.write_str("verify base"),
        }
    }
}

impl<'de> Deserialize<'de> for Step {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Step::parse(&expand(d)?).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Step {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

/// A job: steps run in order (a failing step does not stop the others), on a schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// `backup db [NAME]`, `backup base [--incremental] [NAME]`, `backup objects [NAME]`, `backup redis`,
    /// `copy [NAME]`, `prune`, `verify [db|base]`.
    pub steps: Vec<Step>,
    /// Cron schedule for the daemon.
    #[serde(default)]
    pub schedule: Option<Schedule>,
}

/// The guide's jobs: `daily` (every backup, the copies, then prune) at 02:00, `weekly`
/// (verify) on Sundays at 03:00. A `copy` step without copies configured does nothing.
pub fn default_jobs() -> BTreeMap<String, JobConfig> {
    let job = |steps: &[Step], schedule: &str| JobConfig {
        steps: steps.to_vec(),
        schedule: Some(Schedule::parse(schedule).expect("the default schedules parse")),
    };
    BTreeMap::from([
        (
            "daily".to_string(),
            job(
                &[
                    Step::BackupDb(None),
                    Step::BackupBase(None, false),
                    Step::BackupObjects(None),
                    Step::BackupRedis,
                    Step::Copy(None),
                    Step::Prune,
                ],
                "0 2 * * *",
            ),
        ),
        (
            "weekly".to_string(),
            job(&[Step::Verify(None)], "0 3 * * 0"),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_and_bad_ones_say_what_is_allowed() {
        assert_eq!(Step::parse("backup db"), Ok(Step::BackupDb(None)));
        assert_eq!(
            Step::parse("backup  objects media"),
            Ok(Step::BackupObjects(Some("media".into())))
        );
        assert_eq!(
            Step::parse("verify base"),
            Ok(Step::Verify(Some(StepKind::Base)))
        );
        let err = Step::parse("backup everything now").unwrap_err();
        assert!(
            err.contains("unknown step `backup everything now`"),
            "{err}"
        );
        assert_eq!(
            Step::parse("backup objects media").unwrap().to_string(),
            "backup objects media"
        );
        for (text, step) in [
            ("backup base", Step::BackupBase(None, false)),
            ("backup base --incremental", Step::BackupBase(None, true)),
            (
                "backup base --incremental main",
                Step::BackupBase(Some("main".into()), true),
            ),
        ] {
            assert_eq!(Step::parse(text), Ok(step.clone()));
            assert_eq!(step.to_string(), text);
        }
        assert!(Step::parse("backup base --incremental main extra").is_err());
    }
}
