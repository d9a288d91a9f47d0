//! S3 lifecycle rules for the repository's bucket: the ones lifeboat wants, a bucket's
//! existing rules read with an XML parser, a check of those against what retention keeps,
//! and the configuration `--apply` writes.
//!
//! lifeboat's rules never expire a current object: retention keeps yearly dumps forever and WAL
//! back to the oldest kept base backup, which no age-based rule can know (the guide's rule that
//! expires WAL after 7 days breaks recovery as soon as a base backup is older than that). So the
//! rules are a safety net for what prune cannot see: incomplete multipart uploads of killed
//! backups, and old noncurrent versions where the bucket keeps versions.
//!
//! Every rule lifeboat did not write is kept exactly as the bucket gave it (its bytes, not a
//! re-rendering of what was understood of it), so a filter or action lifeboat does not model
//! survives `--apply` unchanged. Each one is also read into [`RuleXml`] to be judged; one that
//! cannot be read is kept all the same, and reported.

use quick_xml::events::Event;
use serde::{Deserialize, Serialize};

pub const ID_PREFIX: &str = "lifeboat-";
const NAMESPACE: &str = "http://s3.amazonaws.com/doc/2006-03-01/";

/// One rule in S3's XML shape (`PutBucketLifecycleConfiguration`), in the parts lifeboat
/// reads; elements it does not know are skipped when reading (but kept in the raw rule).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RuleXml {
    #[serde(rename = "ID", default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// The rule's prefix in the old form, outside a filter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<FilterXml>,
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiration: Option<ExpirationXml>,
    #[serde(rename = "Transition", default, skip_serializing_if = "Vec::is_empty")]
    pub transitions: Vec<TransitionXml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noncurrent_version_expiration: Option<NoncurrentXml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abort_incomplete_multipart_upload: Option<AbortXml>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FilterXml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<TagXml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_greater_than: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_less_than: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub and: Option<AndXml>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AndXml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(rename = "Tag", default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<TagXml>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_greater_than: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_size_less_than: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TagXml {
    pub key: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExpirationXml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_object_delete_marker: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransitionXml {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    pub storage_class: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NoncurrentXml {
    pub noncurrent_days: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AbortXml {
    pub days_after_initiation: u32,
}

impl RuleXml {
    pub fn enabled(&self) -> bool {
        self.status == "Enabled"
    }

    /// The key prefix the rule applies to (`""`: the whole bucket).
    pub fn key_prefix(&self) -> &str {
        let filter = self.filter.as_ref();
        filter
            .and_then(|f| f.and.as_ref().and_then(|a| a.prefix.as_deref()))
            .or_else(|| filter.and_then(|f| f.prefix.as_deref()))
            .or(self.prefix.as_deref())
            .unwrap_or("")
    }

    /// What narrows the rule besides its prefix (tags, sizes), as words; empty for none.
    fn qualifiers(&self) -> Vec<String> {
        let Some(filter) = &self.filter else {
            return Vec::new();
        };
        let mut tags: Vec<&TagXml> = filter.tag.iter().collect();
        let (mut over, mut under) = (
            filter.object_size_greater_than,
            filter.object_size_less_than,
        );
        if let Some(and) = &filter.and {
            tags.extend(&and.tags);
            over = over.or(and.object_size_greater_than);
            under = under.or(and.object_size_less_than);
        }
        let mut out: Vec<String> = tags
            .iter()
            .map(|t| format!("tagged `{}={}`", t.key, t.value))
            .collect();
        if let Some(n) = over {
            out.push(format!("over {n} bytes"));
        }
        if let Some(n) = under {
            out.push(format!("under {n} bytes"));
        }
        out
    }

    /// The rule for `aws s3api put-bucket-lifecycle-configuration`, as JSON.
    pub fn to_aws_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("rules serialize")
    }
}

/// A rule as the bucket has it: its bytes, and what lifeboat read of them.
#[derive(Debug, Clone)]
pub struct ExistingRule {
    /// The `<Rule>...</Rule>` element exactly as given.
    pub raw: String,
    /// What it says; `Err` with the reason when it could not be read.
    pub parsed: Result<RuleXml, String>,
}

impl ExistingRule {
    pub fn id(&self) -> String {
        match &self.parsed {
            Ok(rule) => rule.id.clone().unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    fn is_lifeboats(&self) -> bool {
        self.id().starts_with(ID_PREFIX)
    }
}

/// A bucket's lifecycle configuration as read.
#[derive(Debug, Clone, Default)]
pub struct Configuration {
    pub rules: Vec<ExistingRule>,
    /// The root element's start tag as given (its namespace declarations).
    root: Option<String>,
}

impl Configuration {
    /// Reads a `GetBucketLifecycleConfiguration` answer.
    pub fn parse(xml: &str) -> Result<Configuration, String> {
        let mut reader = quick_xml::Reader::from_str(xml);
        let mut configuration = Configuration::default();
        let mut depth = 0usize;
        let mut rule_start = None;
        loop {
            let before = reader.buffer_position() as usize;
            let event = reader
                .read_event()
                .map_err(|e| format!("not readable XML at byte {before}: {e}"))?;
            match event {
                Event::Start(start) => {
                    depth += 1;
                    let name = start.local_name();
                    if depth == 1 {
                        if name.as_ref() != b"LifecycleConfiguration" {
                            return Err(format!(
                                "not a lifecycle configuration: its root is `{}`",
                                String::from_utf8_lossy(name.as_ref())
                            ));
                        }
                        configuration.root =
                            Some(xml[before..reader.buffer_position() as usize].to_string());
                    } else if depth == 2 && name.as_ref() == b"Rule" {
                        rule_start = Some(before);
                    }
                }
                Event::End(end) => {
                    if depth == 2 && end.local_name().as_ref() == b"Rule" {
                        let start = rule_start.take().unwrap_or(before);
                        let raw = xml[start..reader.buffer_position() as usize].to_string();
                        let parsed =
                            quick_xml::de::from_str::<RuleXml>(&raw).map_err(|e| e.to_string());
                        configuration.rules.push(ExistingRule { raw, parsed });
                    }
                    depth = depth.saturating_sub(1);
                }
                Event::Empty(empty)
                    if depth == 0 && empty.local_name().as_ref() != b"LifecycleConfiguration" =>
                {
                    return Err(format!(
                        "not a lifecycle configuration: its root is `{}`",
                        String::from_utf8_lossy(empty.local_name().as_ref())
                    ));
                }
                Event::Eof => break,
                _ => {}
            }
        }
        if depth != 0 {
            return Err("not readable XML: it ends inside an element".into());
        }
        Ok(configuration)
    }

    /// Warnings for existing rules that would expire, or move to a cold class, what retention
    /// keeps below `prefix`, and for rules that could not be read.
    pub fn conflicts(&self, prefix: &str) -> Vec<String> {
        let ours = folder(prefix);
        let mut out = Vec::new();
        for rule in self.rules.iter().filter(|r| !r.is_lifeboats()) {
            let rule = match &rule.parsed {
                Ok(rule) => rule,
                Err(reason) => {
                    out.push(format!(
                        "a bucket rule could not be read ({reason}): lifeboat cannot tell whether it expires what retention keeps; it is kept as it is, check it by hand"
                    ));
                    continue;
                }
            };
            let theirs = rule.key_prefix();
            if !rule.enabled() || !(theirs.starts_with(&ours) || ours.starts_with(theirs)) {
                continue;
            }
            let id = rule.id.as_deref().unwrap_or("(no id)");
            let mut what = if theirs.is_empty() {
                "everything".to_string()
            } else {
                format!("`{theirs}`")
            };
            let qualifiers = rule.qualifiers();
            if !qualifiers.is_empty() {
                what = format!("objects of {what} {}", qualifiers.join(" and "));
            }
            if let Some(expiration) = &rule.expiration {
                let when = match (&expiration.days, &expiration.date) {
                    (Some(days), _) => Some(format!("after {days} days")),
                    (None, Some(date)) => Some(format!("on {date}")),
                    (None, None) => None,
                };
                if let Some(when) = when {
                    out.push(format!(
                        "bucket rule `{id}` expires {what} {when}, which retention may still keep (yearly dumps forever, WAL back to the oldest kept base backup): remove it or narrow its filter"
                    ));
                }
            }
            for transition in &rule.transitions {
                let when = match (&transition.days, &transition.date) {
                    (Some(days), _) => format!("after {days} days"),
                    (None, Some(date)) => format!("on {date}"),
                    (None, None) => "at once".into(),
                };
                out.push(format!(
                    "bucket rule `{id}` moves {what} to `{}` {when}: a backup there must be restored from the archive before it can be read, which slows a recovery (prune moves monthly and yearly dumps to their classes itself)",
                    transition.storage_class
                ));
            }
        }
        out
    }

    /// The configuration with lifeboat's rules replaced by `wanted`, every other rule kept as
    /// it was given.
    pub fn merged_xml(&self, wanted: &[RuleXml]) -> String {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        match &self.root {
            Some(root) => xml.push_str(root),
            None => xml.push_str(&format!("<LifecycleConfiguration xmlns=\"{NAMESPACE}\">")),
        }
        xml.push('\n');
        for rule in self.rules.iter().filter(|r| !r.is_lifeboats()) {
            xml.push_str(&rule.raw);
            xml.push('\n');
        }
        for rule in wanted {
            xml.push_str(
                &quick_xml::se::to_string_with_root("Rule", rule).expect("rules serialize"),
            );
            xml.push('\n');
        }
        xml.push_str("</LifecycleConfiguration>\n");
        xml
    }

    /// The rules kept and `wanted`, as `aws s3api` JSON (unreadable ones left out).
    pub fn merged_aws_json(&self, wanted: &[RuleXml]) -> serde_json::Value {
        let kept = self
            .rules
            .iter()
            .filter(|r| !r.is_lifeboats())
            .filter_map(|r| r.parsed.as_ref().ok());
        let rules: Vec<serde_json::Value> = kept.chain(wanted).map(RuleXml::to_aws_json).collect();
        serde_json::json!({ "Rules": rules })
    }
}

fn folder(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("{}/", prefix.trim_end_matches('/'))
    }
}

/// The rules lifeboat wants below `prefix` (the repository's, `""` for the whole bucket).
pub fn wanted(prefix: &str) -> Vec<RuleXml> {
    let filter = Some(FilterXml {
        prefix: Some(folder(prefix)),
        ..FilterXml::default()
    });
    vec![
        RuleXml {
            id: Some(format!("{ID_PREFIX}abort-incomplete-uploads")),
            filter: filter.clone(),
            status: "Enabled".into(),
            abort_incomplete_multipart_upload: Some(AbortXml {
                days_after_initiation: 2,
            }),
            ..RuleXml::default()
        },
        RuleXml {
            id: Some(format!("{ID_PREFIX}noncurrent-versions")),
            filter,
            status: "Enabled".into(),
            noncurrent_version_expiration: Some(NoncurrentXml { noncurrent_days: 7 }),
            ..RuleXml::default()
        },
    ]
}

/// `rules` as `aws s3api put-bucket-lifecycle-configuration --lifecycle-configuration` JSON.
pub fn to_aws_json(rules: &[RuleXml]) -> serde_json::Value {
    serde_json::json!({ "Rules": rules.iter().map(RuleXml::to_aws_json).collect::<Vec<_>>() })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// As AWS answers: transitions, tags, size filters, a date expiration, a delete-marker
    /// cleanup, the old top-level prefix, and an element lifeboat knows nothing of.
    const AWS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Rule>
    <ID>expire-wal</ID>
    <Filter><Prefix>lifeboat/wal/</Prefix></Filter>
    <Status>Enabled</Status>
    <Expiration><Days>7</Days></Expiration>
  </Rule>
  <Rule><ID>big-things</ID><Filter><And><Prefix></Prefix><ObjectSizeGreaterThan>1048576</ObjectSizeGreaterThan><Tag><Key>tier</Key><Value>scratch</Value></Tag></And></Filter><Status>Enabled</Status><Expiration><Date>2027-01-01T00:00:00.000Z</Date></Expiration></Rule>
  <Rule>
    <ID>to-glacier</ID>
    <Filter><ObjectSizeGreaterThan>500</ObjectSizeGreaterThan></Filter>
    <Status>Enabled</Status>
    <Transition><Days>30</Days><StorageClass>GLACIER</StorageClass></Transition>
    <Transition><Days>365</Days><StorageClass>DEEP_ARCHIVE</StorageClass></Transition>
    <NoncurrentVersionTransition><NoncurrentDays>10</NoncurrentDays><StorageClass>GLACIER</StorageClass><NewerNoncurrentVersions>3</NewerNoncurrentVersions></NoncurrentVersionTransition>
  </Rule>
  <Rule>
    <ID>markers</ID><Prefix>logs/</Prefix><Status>Enabled</Status>
    <Expiration><ExpiredObjectDeleteMarker>true</ExpiredObjectDeleteMarker></Expiration>
  </Rule>
  <Rule><ID>logs</ID><Filter><Prefix>logs/</Prefix></Filter><Status>Enabled</Status><Expiration><Days>30</Days></Expiration></Rule>
  <Rule><ID>off</ID><Filter><Prefix></Prefix></Filter><Status>Disabled</Status><Expiration><Days>1</Days></Expiration></Rule>
  <Rule><ID>lifeboat-abort-incomplete-uploads</ID><Filter><Prefix>old/</Prefix></Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>30</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule>
</LifecycleConfiguration>"#;

    /// As Cloudflare R2 answers: its default multipart rule, a size filter on its own.
    const R2: &str = r#"<LifecycleConfiguration xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Rule><ID>Default Multipart Abort Rule</ID><Filter><Prefix></Prefix></Filter><Status>Enabled</Status><AbortIncompleteMultipartUpload><DaysAfterInitiation>7</DaysAfterInitiation></AbortIncompleteMultipartUpload></Rule><Rule><ID>small-files</ID><Filter><ObjectSizeLessThan>1024</ObjectSizeLessThan></Filter><Status>Enabled</Status><Expiration><Days>90</Days></Expiration></Rule></LifecycleConfiguration>"#;

    #[test]
    fn rules_are_read_with_every_filter_shape() {
        let config = Configuration::parse(AWS).unwrap();
        assert_eq!(config.rules.len(), 7);
        let ids: Vec<String> = config.rules.iter().map(|r| r.id()).collect();
        assert_eq!(
            ids,
            [
                "expire-wal",
                "big-things",
                "to-glacier",
                "markers",
                "logs",
                "off",
                "lifeboat-abort-incomplete-uploads"
            ]
        );
        let big = config.rules[1].parsed.as_ref().unwrap();
        assert_eq!(big.key_prefix(), "");
        assert_eq!(
            big.qualifiers(),
            ["tagged `tier=scratch`", "over 1048576 bytes"]
        );
        let glacier = config.rules[2].parsed.as_ref().unwrap();
        assert_eq!(glacier.transitions.len(), 2);
        assert_eq!(glacier.transitions[1].storage_class, "DEEP_ARCHIVE");
        assert_eq!(
            config.rules[3].parsed.as_ref().unwrap().key_prefix(),
            "logs/"
        );
        assert!(Configuration::parse("<Nope/>").is_err());
        assert!(Configuration::parse("<LifecycleConfiguration><Rule>").is_err());
    }

    #[test]
    fn what_retention_keeps_is_guarded_and_unrelated_rules_are_not_flagged() {
        let config = Configuration::parse(AWS).unwrap();
        let warnings = config.conflicts("lifeboat");
        assert_eq!(warnings.len(), 4, "{warnings:#?}");
        assert!(warnings[0].contains("`expire-wal` expires `lifeboat/wal/` after 7 days"));
        // Narrower by tag and size, but it still reaches the repository: flagged, saying how.
        assert!(warnings[1].contains(
            "`big-things` expires objects of everything tagged `tier=scratch` and over 1048576 bytes on 2027-01-01"
        ));
        assert!(warnings[2].contains(
            "`to-glacier` moves objects of everything over 500 bytes to `GLACIER` after 30 days"
        ));
        assert!(warnings[3].contains("to `DEEP_ARCHIVE` after 365 days"));
        // R2: the default abort rule is harmless, a size-filtered expiry of the whole bucket is not.
        let r2 = Configuration::parse(R2).unwrap();
        let warnings = r2.conflicts("");
        assert_eq!(warnings.len(), 1, "{warnings:#?}");
        assert!(warnings[0].contains(
            "`small-files` expires objects of everything under 1024 bytes after 90 days"
        ));
    }

    #[test]
    fn apply_keeps_every_other_rule_byte_for_byte() {
        let config = Configuration::parse(AWS).unwrap();
        let merged = config.merged_xml(&wanted("lifeboat"));
        for rule in &config.rules[..6] {
            assert!(merged.contains(&rule.raw), "lost: {}", rule.raw);
        }
        // lifeboat's old rule is replaced, not kept beside the new ones.
        assert!(!merged.contains("<Prefix>old/</Prefix>"));
        let again = Configuration::parse(&merged).unwrap();
        assert_eq!(again.rules.len(), 8);
        let ours: Vec<&RuleXml> = again
            .rules
            .iter()
            .filter(|r| r.is_lifeboats())
            .map(|r| r.parsed.as_ref().unwrap())
            .collect();
        assert_eq!(ours, wanted("lifeboat").iter().collect::<Vec<_>>());
        // What the bucket gave is what goes back: the R2 document round-trips as well.
        let r2 = Configuration::parse(R2).unwrap();
        let merged = r2.merged_xml(&wanted(""));
        assert!(merged.contains(&r2.rules[0].raw) && merged.contains(&r2.rules[1].raw));
    }

    #[test]
    fn a_rule_that_cannot_be_read_is_kept_and_reported() {
        let xml = "<LifecycleConfiguration><Rule><ID>x</ID><Status>Enabled</Status><Expiration><Days>soon</Days></Expiration></Rule></LifecycleConfiguration>";
        let config = Configuration::parse(xml).unwrap();
        assert!(config.rules[0].parsed.is_err());
        assert!(config.conflicts("p")[0].contains("could not be read"));
        assert!(config
            .merged_xml(&wanted("p"))
            .contains(&config.rules[0].raw));
    }

    #[test]
    fn wanted_rules_never_expire_current_objects() {
        let rules = wanted("lifeboat");
        assert!(rules
            .iter()
            .all(|r| r.expiration.is_none() && r.transitions.is_empty()));
        assert!(rules.iter().all(|r| r.key_prefix() == "lifeboat/"));
        let json = to_aws_json(&rules);
        assert_eq!(
            json["Rules"][0]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"],
            2
        );
        assert_eq!(json["Rules"][0]["Filter"]["Prefix"], "lifeboat/");
    }
}
