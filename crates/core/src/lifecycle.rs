//! S3 lifecycle rules for the repository's bucket: the ones lifeboat wants, rendered for the S3
//! API (XML) and for `aws s3api` (JSON), and a check of the bucket's existing rules against
//! what retention keeps.
//!
//! lifeboat's rules never expire a current object: retention keeps yearly dumps forever and WAL
//! back to the oldest kept base backup, which no age-based rule can know (the guide's rule that
//! expires WAL after 7 days breaks recovery as soon as a base backup is older than that). So the
//! rules are a safety net for what prune cannot see: incomplete multipart uploads of killed
//! backups, and old noncurrent versions where the bucket keeps versions.

use serde::Serialize;

/// One lifecycle rule, in the subset lifeboat writes and reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rule {
    pub id: String,
    pub prefix: String,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_days: Option<u32>,
    /// An expiration at a fixed date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiration_date: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_days: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noncurrent_expiration_days: Option<u32>,
}

pub const ID_PREFIX: &str = "lifeboat-";

/// The rules lifeboat wants below `prefix` (the repository's, `""` for the whole bucket).
pub fn wanted(prefix: &str) -> Vec<Rule> {
    let prefix = if prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", prefix.trim_end_matches('/'))
    };
    vec![
        Rule {
            id: format!("{ID_PREFIX}abort-incomplete-uploads"),
            prefix: prefix.clone(),
            enabled: true,
            expiration_days: None,
            expiration_date: None,
            abort_incomplete_days: Some(2),
            noncurrent_expiration_days: None,
        },
        Rule {
            id: format!("{ID_PREFIX}noncurrent-versions"),
            prefix,
            enabled: true,
            expiration_days: None,
            expiration_date: None,
            abort_incomplete_days: None,
            noncurrent_expiration_days: Some(7),
        },
    ]
}

/// Warnings for existing rules that would expire what retention keeps below `prefix`.
pub fn conflicts(existing: &[Rule], prefix: &str) -> Vec<String> {
    let ours = if prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", prefix.trim_end_matches('/'))
    };
    existing
        .iter()
        .filter(|r| r.enabled && !r.id.starts_with(ID_PREFIX))
        .filter(|r| r.expiration_days.is_some() || r.expiration_date.is_some())
        .filter(|r| r.prefix.starts_with(&ours) || ours.starts_with(&r.prefix))
        .map(|r| {
            let when = match (r.expiration_days, &r.expiration_date) {
                (Some(days), _) => format!("after {days} days"),
                (None, Some(date)) => format!("on {date}"),
                (None, None) => unreachable!("filtered above"),
            };
            let what = if r.prefix.is_empty() { "everything".to_string() } else { format!("`{}`", r.prefix) };
            format!(
                "bucket rule `{}` expires {what} {when}, which retention may still keep (yearly dumps forever, WAL back to the oldest kept base backup): remove it or narrow its prefix",
                r.id
            )
        })
        .collect()
}

/// Replaces lifeboat's rules in `existing` with `wanted`, keeping every other rule.
pub fn merge(existing: &[Rule], wanted: &[Rule]) -> Vec<Rule> {
    let mut out: Vec<Rule> = existing
        .iter()
        .filter(|r| !r.id.starts_with(ID_PREFIX))
        .cloned()
        .collect();
    out.extend(wanted.iter().cloned());
    out
}

/// The rules as the body of `PutBucketLifecycleConfiguration`.
pub fn to_xml(rules: &[Rule]) -> String {
    let mut xml = String::from(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LifecycleConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">\n",
    );
    for r in rules {
        xml.push_str("  <Rule>\n");
        xml.push_str(&format!("    <ID>{}</ID>\n", escape(&r.id)));
        xml.push_str(&format!(
            "    <Filter><Prefix>{}</Prefix></Filter>\n",
            escape(&r.prefix)
        ));
        xml.push_str(&format!(
            "    <Status>{}</Status>\n",
            if r.enabled { "Enabled" } else { "Disabled" }
        ));
        if let Some(days) = r.expiration_days {
            xml.push_str(&format!(
                "    <Expiration><Days>{days}</Days></Expiration>\n"
            ));
        }
        if let Some(date) = &r.expiration_date {
            xml.push_str(&format!(
                "    <Expiration><Date>{}</Date></Expiration>\n",
                escape(date)
            ));
        }
        if let Some(days) = r.abort_incomplete_days {
            xml.push_str(&format!("    <AbortIncompleteMultipartUpload><DaysAfterInitiation>{days}</DaysAfterInitiation></AbortIncompleteMultipartUpload>\n"));
        }
        if let Some(days) = r.noncurrent_expiration_days {
            xml.push_str(&format!("    <NoncurrentVersionExpiration><NoncurrentDays>{days}</NoncurrentDays></NoncurrentVersionExpiration>\n"));
        }
        xml.push_str("  </Rule>\n");
    }
    xml.push_str("</LifecycleConfiguration>\n");
    xml
}

/// The rules as `aws s3api put-bucket-lifecycle-configuration --lifecycle-configuration` JSON.
pub fn to_aws_json(rules: &[Rule]) -> serde_json::Value {
    let rules: Vec<serde_json::Value> = rules
        .iter()
        .map(|r| {
            let mut rule = serde_json::json!({
                "ID": r.id,
                "Filter": { "Prefix": r.prefix },
                "Status": if r.enabled { "Enabled" } else { "Disabled" },
            });
            if let Some(days) = r.expiration_days {
                rule["Expiration"] = serde_json::json!({ "Days": days });
            }
            if let Some(date) = &r.expiration_date {
                rule["Expiration"] = serde_json::json!({ "Date": date });
            }
            if let Some(days) = r.abort_incomplete_days {
                rule["AbortIncompleteMultipartUpload"] =
                    serde_json::json!({ "DaysAfterInitiation": days });
            }
            if let Some(days) = r.noncurrent_expiration_days {
                rule["NoncurrentVersionExpiration"] = serde_json::json!({ "NoncurrentDays": days });
            }
            rule
        })
        .collect();
    serde_json::json!({ "Rules": rules })
}

/// Reads the rules of a `GetBucketLifecycleConfiguration` answer (the parts lifeboat knows;
/// a rule's other actions are kept out of its checks but the rule itself is kept on merge
/// only by what is read here, so `--apply` refuses configurations with unknown actions).
pub fn from_xml(xml: &str) -> (Vec<Rule>, bool) {
    let mut rules = Vec::new();
    let mut unknown = false;
    for block in xml.split("<Rule>").skip(1) {
        let block = block.split("</Rule>").next().unwrap_or_default();
        let value = |tag: &str| element(block, tag);
        let inside = |outer: &str, tag: &str| element(&value(outer).unwrap_or_default(), tag);
        let prefix = inside("Filter", "Prefix")
            .or_else(|| value("Prefix"))
            .unwrap_or_default();
        for known_or_not in ["Transition", "NoncurrentVersionTransition", "And", "Tag"] {
            if block.contains(&format!("<{known_or_not}>")) {
                unknown = true;
            }
        }
        rules.push(Rule {
            id: value("ID").unwrap_or_default(),
            prefix,
            enabled: value("Status").as_deref() == Some("Enabled"),
            expiration_days: inside("Expiration", "Days").and_then(|d| d.parse().ok()),
            expiration_date: inside("Expiration", "Date"),
            abort_incomplete_days: inside("AbortIncompleteMultipartUpload", "DaysAfterInitiation")
                .and_then(|d| d.parse().ok()),
            noncurrent_expiration_days: inside("NoncurrentVersionExpiration", "NoncurrentDays")
                .and_then(|d| d.parse().ok()),
        });
    }
    (rules, unknown)
}

fn element(text: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = text.find(&open)? + open.len();
    let end = text[start..].find(&format!("</{tag}>"))?;
    Some(unescape(&text[start..start + end]))
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUIDE: &str = r#"<LifecycleConfiguration>
      <Rule><ID>expire-wal</ID><Filter><Prefix>lifeboat/wal/</Prefix></Filter><Status>Enabled</Status>
        <Expiration><Days>7</Days></Expiration></Rule>
      <Rule><ID>logs</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status>
        <Expiration><Days>30</Days></Expiration></Rule>
      <Rule><ID>old-everything</ID><Filter><Prefix></Prefix></Filter><Status>Disabled</Status>
        <Expiration><Days>1</Days></Expiration></Rule>
    </LifecycleConfiguration>"#;

    #[test]
    fn the_guides_wal_rule_is_flagged_and_unrelated_ones_are_not() {
        let (rules, unknown) = from_xml(GUIDE);
        assert!(!unknown);
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0].expiration_days, Some(7));
        let warnings = conflicts(&rules, "lifeboat");
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains("`expire-wal` expires `lifeboat/wal/` after 7 days"));
        // A rule on the whole bucket covers the repository too.
        let everything = vec![Rule {
            enabled: true,
            ..rules[2].clone()
        }];
        assert!(conflicts(&everything, "lifeboat")[0].contains("expires everything after 1 days"));
    }

    #[test]
    fn wanted_rules_never_expire_current_objects_and_round_trip() {
        let rules = wanted("lifeboat");
        assert!(rules
            .iter()
            .all(|r| r.expiration_days.is_none() && r.expiration_date.is_none()));
        assert!(rules.iter().all(|r| r.prefix == "lifeboat/"));
        let (back, unknown) = from_xml(&to_xml(&rules));
        assert!(!unknown);
        assert_eq!(back, rules);
        let json = to_aws_json(&rules);
        assert_eq!(
            json["Rules"][0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
            2
        );
    }

    #[test]
    fn merge_replaces_only_lifeboats_rules() {
        let (existing, _) = from_xml(GUIDE);
        let mut stale = wanted("old");
        stale[0].abort_incomplete_days = Some(30);
        let mut all = existing.clone();
        all.extend(stale);
        let merged = merge(&all, &wanted("lifeboat"));
        assert_eq!(merged.len(), 5);
        assert_eq!(&merged[..3], &existing[..]);
        assert_eq!(merged[3].abort_incomplete_days, Some(2));
    }

    #[test]
    fn transitions_are_reported_as_unknown() {
        let xml = "<Rule><ID>t</ID><Status>Enabled</Status><Transition><Days>1</Days><StorageClass>GLACIER</StorageClass></Transition></Rule>";
        assert!(from_xml(xml).1);
    }
}
