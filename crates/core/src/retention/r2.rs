//! Cloudflare R2's bucket lock rules, without I/O: R2 has no per-object Object Lock; its
//! buckets hold by key prefix and age ([`r2_rules`]), which lifeboat shows and checks
//! ([`r2_conflicts`]) but cannot set. A rule must not outlast retention in any part of its
//! area: R2 refuses the deletion, and `prune` fails on what it was refused (it cannot tell a
//! lock rule from a key without rights).

use serde::{Deserialize, Serialize};

use super::Policy;

/// A Cloudflare R2 bucket lock rule, in the shape of `wrangler r2 bucket lock set --file`
/// and of Cloudflare's API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct R2Rule {
    pub id: String,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default)]
    pub prefix: String,
    pub condition: R2Condition,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum R2Condition {
    Age {
        #[serde(rename = "maxAgeSeconds")]
        max_age_seconds: u64,
    },
    Date {
        date: String,
    },
    Indefinite,
}

/// A bucket's lock rules, as `wrangler` and the API (`{"result": {"rules": ...}}`) give them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct R2Rules {
    pub rules: Vec<R2Rule>,
}

impl R2Rules {
    /// Reads either shape; the error says what is wrong.
    pub fn parse(text: &str) -> Result<R2Rules, String> {
        #[derive(Deserialize)]
        struct Api {
            result: R2Rules,
        }
        serde_json::from_str::<R2Rules>(text)
            .or_else(|first| {
                serde_json::from_str::<Api>(text)
                    .map(|api| api.result)
                    .map_err(|_| first)
            })
            .map_err(|e| format!("not R2 bucket lock rules (`{{\"rules\": [...]}}`): {e}"))
    }
}

/// The areas of a repository and how long retention keeps what is there at least, in days.
/// WAL file names start with their timeline, `0` below timeline 0x10000000: the prefix
/// `wal/0` leaves out `wal/refused.json`, which lifeboat rewrites. The WAL of every other
/// cluster and generation is under `wal/clusters/`.
fn lockable(policy: &Policy) -> [(&'static str, &'static str, u32); 6] {
    [
        ("lifeboat-db", "data/db/", policy.daily_days),
        ("lifeboat-redis", "data/redis/", policy.daily_days),
        ("lifeboat-base", "data/base/", policy.pitr_days),
        // Base backups' manifests are here too, deleted after `pitr_days`; a dump's manifest
        // is rewritten when prune keeps it for its month, after `daily_days`.
        (
            "lifeboat-manifests",
            "manifests/",
            policy.daily_days.min(policy.pitr_days),
        ),
        ("lifeboat-wal", "wal/0", policy.pitr_days),
        ("lifeboat-wal-clusters", "wal/clusters/", policy.pitr_days),
    ]
}

/// What lifeboat rewrites or deletes as it runs: a lock there breaks it.
const REWRITTEN: [&str; 3] = ["locks/", "verifications/", "wal/refused.json"];

fn under(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{}/{key}", prefix.trim_end_matches('/'))
    }
}

/// The R2 lock rules that match `policy` for a repository below `prefix`: each area locked
/// for as long as retention keeps everything there (monthly and yearly dumps stay locked
/// only as long as daily ones: an R2 rule knows ages, not tiers).
pub fn r2_rules(policy: &Policy, prefix: &str) -> R2Rules {
    R2Rules {
        rules: lockable(policy)
            .into_iter()
            .filter(|(_, _, days)| *days > 0)
            .map(|(id, area, days)| R2Rule {
                id: id.to_string(),
                enabled: true,
                prefix: under(prefix, area),
                condition: R2Condition::Age {
                    max_age_seconds: u64::from(days) * 86_400,
                },
            })
            .collect(),
    }
}

/// What is wrong with a bucket's R2 lock rules for a repository below `prefix`: problems
/// (lifeboat's rewrites refused, locks longer than retention, which fail `prune`) and notes
/// (locks until a date, areas left unlocked).
pub fn r2_conflicts(rules: &R2Rules, policy: &Policy, prefix: &str) -> (Vec<String>, Vec<String>) {
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let enabled: Vec<&R2Rule> = rules.rules.iter().filter(|r| r.enabled).collect();
    // A rule covers a key when its prefix starts the key, or the key's area starts the
    // rule's prefix (a rule on part of an area still locks some of it).
    let overlaps =
        |rule: &R2Rule, key: &str| key.starts_with(&rule.prefix) || rule.prefix.starts_with(key);
    for rule in &enabled {
        for key in REWRITTEN.iter().map(|k| under(prefix, k)) {
            if overlaps(rule, &key) {
                problems.push(format!(
                    "R2 lock rule `{}` (prefix `{}`) locks `{key}`, which lifeboat rewrites as it runs: narrow it to the areas `lifecycle` shows",
                    rule.id, rule.prefix
                ));
            }
        }
    }
    for (_, area, keep_days) in lockable(policy) {
        let key = under(prefix, area);
        let covering: Vec<&&R2Rule> = enabled.iter().filter(|r| overlaps(r, &key)).collect();
        if covering.is_empty() {
            notes.push(format!(
                "nothing locks `{key}`: a leaked key can delete what is there"
            ));
        }
        for rule in covering {
            let days = match &rule.condition {
                R2Condition::Indefinite => {
                    problems.push(format!(
                        "R2 lock rule `{}` locks `{key}` forever: prune would be refused what retention lets go, and fail; give it an age of {keep_days} days",
                        rule.id
                    ));
                    continue;
                }
                R2Condition::Date { date } => {
                    notes.push(format!(
                        "R2 lock rule `{}` locks `{key}` until {date}: prune fails on what retention lets go before then",
                        rule.id
                    ));
                    continue;
                }
                R2Condition::Age { max_age_seconds } => max_age_seconds.div_ceil(86_400),
            };
            if days > u64::from(keep_days) {
                problems.push(format!(
                    "R2 lock rule `{}` locks `{key}` for {days} days, but retention lets some of it go after {keep_days}: prune would be refused and fail; use at most {keep_days} days",
                    rule.id
                ));
            }
        }
    }
    (problems, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn r2_rules_match_the_policy_and_conflicts_are_found() {
        let policy = Policy::default();
        let wanted = r2_rules(&policy, "lifeboat");
        let json = serde_json::to_value(&wanted).unwrap();
        assert_eq!(json["rules"][0]["prefix"], "lifeboat/data/db/");
        assert_eq!(json["rules"][0]["condition"]["type"], "Age");
        assert_eq!(json["rules"][0]["condition"]["maxAgeSeconds"], 30 * 86_400);
        assert_eq!(json["rules"][3]["prefix"], "lifeboat/manifests/");
        assert_eq!(json["rules"][3]["condition"]["maxAgeSeconds"], 7 * 86_400);
        assert_eq!(json["rules"][4]["prefix"], "lifeboat/wal/0");
        assert_eq!(json["rules"][5]["prefix"], "lifeboat/wal/clusters/");
        // The rules lifeboat shows conflict with nothing and leave nothing unlocked.
        let (problems, notes) = r2_conflicts(&wanted, &policy, "lifeboat");
        assert!(
            problems.is_empty() && notes.is_empty(),
            "{problems:?} {notes:?}"
        );
        // Read back from the API's shape.
        let api = format!("{{\"success\": true, \"result\": {json}}}");
        assert_eq!(R2Rules::parse(&api).unwrap(), wanted);
        assert!(R2Rules::parse("[1]")
            .unwrap_err()
            .contains("not R2 bucket lock rules"));

        // One rule over the whole bucket, forever: it locks the run lock, and nothing is
        // ever pruned.
        let all = R2Rules::parse(
            r#"{"rules": [{"id": "all", "enabled": true, "prefix": "", "condition": {"type": "Indefinite"}}]}"#,
        )
        .unwrap();
        let (problems, _) = r2_conflicts(&all, &policy, "lifeboat");
        assert!(
            problems.iter().any(|p| p.contains("`lifeboat/locks/`")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("forever")),
            "{problems:?}"
        );
        // Manifests and data locked longer than retention keeps them: prune would fail. WAL
        // left unlocked: a note. A disabled rule counts for nothing.
        let some = R2Rules::parse(
            r#"{"rules": [
                {"id": "m", "prefix": "lifeboat/manifests/", "condition": {"type": "Age", "maxAgeSeconds": 7776000}},
                {"id": "d", "prefix": "lifeboat/data/", "condition": {"type": "Age", "maxAgeSeconds": 7776000}},
                {"id": "off", "enabled": false, "prefix": "lifeboat/", "condition": {"type": "Indefinite"}}
            ]}"#,
        )
        .unwrap();
        let (problems, notes) = r2_conflicts(&some, &policy, "lifeboat");
        assert_eq!(problems.len(), 4, "{problems:?}");
        let found = |rule: &str, area: &str, at_most: &str| {
            problems
                .iter()
                .any(|p| p.contains(rule) && p.contains(area) && p.contains(at_most))
        };
        assert!(
            found("rule `m`", "`lifeboat/manifests/` for 90", "at most 7 days"),
            "{problems:?}"
        );
        assert!(
            found("rule `d`", "`lifeboat/data/db/` for 90", "at most 30 days"),
            "{problems:?}"
        );
        assert!(
            found("rule `d`", "`lifeboat/data/base/` for 90", "at most 7 days"),
            "{problems:?}"
        );
        assert_eq!(
            notes,
            [
                "nothing locks `lifeboat/wal/0`: a leaked key can delete what is there",
                "nothing locks `lifeboat/wal/clusters/`: a leaked key can delete what is there"
            ]
        );
    }
}
