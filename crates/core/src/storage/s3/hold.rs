//! S3 Object Lock requests: whether a bucket has Object Lock, an object's lock (from a HEAD),
//! setting one (`PUT ?retention`), and deleting every version of an object in a bucket
//! that keeps versions (as a bucket with Object Lock does), where a locked version is
//! reported as such instead of failing.
//!
//! With versions kept, a DELETE without a version only hides an object behind a delete
//! marker: the bytes stay, and a leaked key can hide a whole repository that way (the locked
//! versions are still there: [`S3Api::hidden`] finds them, and removing the delete markers
//! shows them again). What `prune` deletes it deletes for good, version by version.

use jiff::Timestamp;
use serde::Deserialize;

use super::api::{encode_query, Request, S3Api};
use super::call::{Deletion, Held};
use crate::config::LockMode;
use crate::error::{Error, Result, StorageFailure};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListVersions {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_version_id_marker: Option<String>,
    #[serde(rename = "$value", default)]
    entries: Vec<VersionEntry>,
}

#[derive(Debug, Deserialize)]
enum VersionEntry {
    Version(VersionXml),
    DeleteMarker(VersionXml),
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct VersionXml {
    key: String,
    version_id: String,
    #[serde(default)]
    is_latest: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LockConfigurationXml {
    #[serde(default)]
    object_lock_enabled: Option<String>,
}

/// One version of an object, newest first within a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub key: String,
    pub version_id: String,
    pub latest: bool,
    pub delete_marker: bool,
}

/// The body of `PUT ?retention`.
fn retention_xml(mode: LockMode, until: Timestamp) -> String {
    format!(
        "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode>\
         <RetainUntilDate>{}</RetainUntilDate></Retention>",
        mode.as_s3(),
        until.round(jiff::Unit::Second).unwrap_or(until)
    )
}

impl S3Api {
    /// Whether the bucket has Object Lock enabled.
    pub async fn lock_enabled(&self) -> Result<bool> {
        let display = format!("s3://{}?object-lock", self.bucket());
        let request = Request {
            op: "reading the Object Lock configuration of",
            display: &display,
            method: reqwest::Method::GET,
            url: self.url("?object-lock")?,
            headers: &[],
            body: None,
        };
        match self.send(&request).await {
            Ok(response) => {
                let text = response.text().await.unwrap_or_default();
                let config: LockConfigurationXml =
                    quick_xml::de::from_str(&text).unwrap_or_default();
                Ok(config.object_lock_enabled.as_deref() == Some("Enabled"))
            }
            Err(e) if e.is_not_found() => Ok(false),
            // "ObjectLockConfigurationNotFoundError" comes as a 404 from AWS, a 400 elsewhere.
            Err(Error::Storage { message, .. })
                if message.contains("ObjectLockConfigurationNotFound") =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// An object's lock (of version `version`, else the current one); `None` when it has
    /// none or does not exist.
    pub async fn retention(&self, key: &str, version: Option<&str>) -> Result<Option<Held>> {
        let Some(headers) = self.head(key, version, "checking the lock of").await? else {
            return Ok(None);
        };
        let (Some(mode), Some(until)) = (
            headers.get("x-amz-object-lock-mode").cloned(),
            headers.get("x-amz-object-lock-retain-until-date"),
        ) else {
            return Ok(None);
        };
        let until = until.parse::<Timestamp>().map_err(|e| Error::Storage {
            op: "checking the lock of",
            path: self.display(key),
            kind: StorageFailure::Refused,
            message: format!("the server's retain-until date `{until}` cannot be read: {e}"),
        })?;
        Ok(Some(Held { mode, until }))
    }

    /// Locks the current version of an object until `until`.
    pub async fn set_retention(&self, key: &str, mode: LockMode, until: Timestamp) -> Result<()> {
        let display = self.display(key);
        let mut url = self.object_url(key)?;
        url.set_query(Some("retention"));
        let body = retention_xml(mode, until);
        match self
            .send_xml("locking", &display, reqwest::Method::PUT, url, body)
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Storage { message, .. })
                if message.contains("missing ObjectLockConfiguration")
                    || message.contains("InvalidRequest") =>
            {
                Err(Error::Config(format!(
                    "bucket `{}` has no Object Lock, so `{display}` cannot be locked: create the bucket with Object Lock enabled (`aws s3api create-bucket --object-lock-enabled-for-bucket`), or remove `object_lock` from the configuration",
                    self.bucket()
                )))
            }
            Err(e) => Err(e),
        }
    }

    /// Every version and delete marker of exactly `key`.
    pub async fn versions(&self, key: &str) -> Result<Vec<Version>> {
        let full = self.full_key(key);
        let mut all = self.list_versions(&full).await?;
        all.retain(|v| v.key == full);
        Ok(all)
    }

    /// Every version and delete marker below `prefix` (full keys), in the server's order.
    async fn list_versions(&self, full_prefix: &str) -> Result<Vec<Version>> {
        let mut out = Vec::new();
        let mut next = None;
        loop {
            let (page, after) = self.versions_page(full_prefix, next.as_ref()).await?;
            out.extend(page);
            match after {
                Some(markers) => next = Some(markers),
                None => return Ok(out),
            }
        }
    }

    /// One page of the versions below `prefix`, and where the next one starts, if any.
    async fn versions_page(
        &self,
        full_prefix: &str,
        from: Option<&(String, String)>,
    ) -> Result<(Vec<Version>, Option<(String, String)>)> {
        let display = format!("s3://{}/{full_prefix}?versions", self.bucket());
        let mut query = format!("?versions&prefix={}", encode_query(full_prefix));
        if let Some((key, version)) = from {
            query.push_str(&format!(
                "&key-marker={}&version-id-marker={}",
                encode_query(key),
                encode_query(version)
            ));
        }
        let request = Request {
            op: "listing the versions of",
            display: &display,
            method: reqwest::Method::GET,
            url: self.url(&query)?,
            headers: &[],
            body: None,
        };
        let response = self.send(&request).await?;
        let text = response.text().await.unwrap_or_default();
        let page: ListVersions = quick_xml::de::from_str(&text).map_err(|e| Error::Storage {
            op: "listing the versions of",
            path: display.clone(),
            kind: StorageFailure::Refused,
            message: format!("the listing cannot be read: {e}"),
        })?;
        let versions = page
            .entries
            .into_iter()
            .filter_map(|entry| {
                let (v, delete_marker) = match entry {
                    VersionEntry::Version(v) => (v, false),
                    VersionEntry::DeleteMarker(v) => (v, true),
                    VersionEntry::Other => return None,
                };
                Some(Version {
                    key: v.key,
                    version_id: v.version_id,
                    latest: v.is_latest,
                    delete_marker,
                })
            })
            .collect();
        let next = match (
            page.is_truncated,
            page.next_key_marker,
            page.next_version_id_marker,
        ) {
            (true, Some(key), Some(version)) => Some((key, version)),
            _ => None,
        };
        Ok((versions, next))
    }

    /// Deletes one version of an object (or a delete marker).
    async fn delete_version(&self, full_key: &str, version: &str) -> Result<()> {
        let display = format!("s3://{}/{full_key}", self.bucket());
        let url = self.url(&format!(
            "/{}?versionId={}",
            super::api::encode_key(full_key),
            encode_query(version)
        ))?;
        let request = Request {
            op: "deleting",
            display: &display,
            method: reqwest::Method::DELETE,
            url,
            headers: &[],
            body: None,
        };
        self.send(&request).await.map(|_| ())
    }

    /// Deletes every version of `key`, the current one last; a version that is locked stops
    /// it there (the current one stays, so the object stays readable as it was).
    pub async fn delete_versions(&self, key: &str) -> Result<Deletion> {
        let mut versions = self.versions(key).await?;
        versions.sort_by_key(|v| v.latest);
        for version in versions {
            match self.delete_version(&version.key, &version.version_id).await {
                Ok(()) => {}
                Err(
                    e @ Error::Storage {
                        kind: StorageFailure::Denied,
                        ..
                    },
                ) => {
                    let locked = self.retention(key, Some(&version.version_id)).await?;
                    return match locked {
                        Some(r) if r.until > Timestamp::now() => {
                            Ok(Deletion::Locked { until: r.until })
                        }
                        _ => Err(e),
                    };
                }
                Err(e) => return Err(e),
            }
        }
        Ok(Deletion::Deleted)
    }

    /// Keys below `prefix` whose newest entry is a delete marker over kept versions: hidden,
    /// not gone. With `show`, the delete markers are removed so that they are seen again.
    pub async fn hidden(&self, prefix: &str, show: bool) -> Result<Vec<String>> {
        let full = self.full_key(prefix);
        // Page by page, so that memory stays bounded whatever the archive's size: a key is
        // judged once no later page can hold more of it (pages come in key order; within a
        // page, servers differ in how they interleave versions and delete markers).
        let mut pending: std::collections::BTreeMap<String, Vec<Version>> = Default::default();
        let mut hidden = Vec::new();
        let mut next = None;
        loop {
            let (page, after) = self.versions_page(&full, next.as_ref()).await?;
            for v in page {
                pending.entry(v.key.clone()).or_default().push(v);
            }
            let complete: Vec<String> = match &after {
                Some((last_key, _)) => pending
                    .keys()
                    .filter(|k| k.as_str() < last_key.as_str())
                    .cloned()
                    .collect(),
                None => pending.keys().cloned().collect(),
            };
            for key in complete {
                let group = pending.remove(&key).unwrap_or_default();
                if !is_hidden(&group) {
                    continue;
                }
                if show {
                    for marker in group.iter().filter(|v| v.delete_marker) {
                        self.delete_version(&marker.key, &marker.version_id).await?;
                    }
                }
                hidden.push(self.relative_key(&key));
            }
            match after {
                Some(markers) => next = Some(markers),
                None => return Ok(hidden),
            }
        }
    }
}

/// Whether one key's versions are hidden: its newest entry is a delete marker, over kept
/// versions.
fn is_hidden(group: &[Version]) -> bool {
    group.iter().any(|v| v.latest && v.delete_marker) && group.iter().any(|v| !v.delete_marker)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_listings_and_retention_bodies_are_read_and_written() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListVersionsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>b</Name><Prefix>p/a</Prefix><IsTruncated>true</IsTruncated>
  <NextKeyMarker>p/a</NextKeyMarker><NextVersionIdMarker>v1</NextVersionIdMarker>
  <DeleteMarker><Key>p/a</Key><VersionId>m1</VersionId><IsLatest>true</IsLatest></DeleteMarker>
  <Version><Key>p/a</Key><VersionId>v2</VersionId><IsLatest>false</IsLatest><Size>3</Size></Version>
  <CommonPrefixes><Prefix>x</Prefix></CommonPrefixes>
</ListVersionsResult>"#;
        let page: ListVersions = quick_xml::de::from_str(xml).unwrap();
        assert!(page.is_truncated);
        let version = |id: &str, latest: bool, delete_marker: bool| Version {
            key: "k".into(),
            version_id: id.into(),
            latest,
            delete_marker,
        };
        assert!(is_hidden(&[
            version("m", true, true),
            version("v", false, false)
        ]));
        assert!(!is_hidden(&[
            version("v", true, false),
            version("m", false, true)
        ]));
        assert!(
            !is_hidden(&[version("m", true, true)]),
            "only markers: nothing to show"
        );
        assert_eq!(page.next_version_id_marker.as_deref(), Some("v1"));
        // Elements other than versions and markers (the name, the prefix) are skipped.
        let entries: Vec<&VersionEntry> = page
            .entries
            .iter()
            .filter(|e| !matches!(e, VersionEntry::Other))
            .collect();
        assert_eq!(entries.len(), 2);
        assert!(
            matches!(entries[0], VersionEntry::DeleteMarker(v) if v.version_id == "m1" && v.is_latest)
        );
        assert!(
            matches!(entries[1], VersionEntry::Version(v) if v.version_id == "v2" && !v.is_latest)
        );
        let until: Timestamp = "2026-12-31T10:00:00.7Z".parse().unwrap();
        let body = retention_xml(LockMode::Compliance, until);
        assert!(body.contains("<Mode>COMPLIANCE</Mode>"), "{body}");
        assert!(
            body.contains("<RetainUntilDate>2026-12-31T10:00:01Z</RetainUntilDate>"),
            "{body}"
        );
        let config: LockConfigurationXml = quick_xml::de::from_str(
            "<ObjectLockConfiguration><ObjectLockEnabled>Enabled</ObjectLockEnabled></ObjectLockConfiguration>",
        )
        .unwrap();
        assert_eq!(config.object_lock_enabled.as_deref(), Some("Enabled"));
    }
}
