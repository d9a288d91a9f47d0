//! Archive tiers (S3 Glacier Flexible Retrieval, Glacier Deep Archive): whether an object can
//! be read now, and the restore request that makes a readable copy of it for some days.

use super::api::S3Api;
use crate::error::{Error, Result};

pub use super::call::{needs_restore, Readiness};

/// How fast a restore request is served, and at what price.
pub const TIERS: [&str; 3] = ["Expedited", "Standard", "Bulk"];

/// What a tier usually takes, for messages (AWS's figures for Glacier Flexible Retrieval).
pub fn usual_wait(tier: &str, class: &str) -> &'static str {
    match (tier, class) {
        (_, "DEEP_ARCHIVE") if tier == "Bulk" => "within 48 hours",
        (_, "DEEP_ARCHIVE") => "within 12 hours",
        ("Expedited", _) => "within 1 to 5 minutes",
        ("Bulk", _) => "within 5 to 12 hours",
        _ => "within 3 to 5 hours",
    }
}

/// Days a restored copy stays readable: enough for a restore that waited a day, and its retry.
pub const RESTORE_DAYS: u32 = 2;

/// How a backup in an archive tier is read back.
#[derive(Debug, Clone)]
pub struct Thaw {
    /// `Expedited`, `Standard` or `Bulk`.
    pub tier: String,
    /// How long to wait for the restore before failing with "not ready" (zero: at once).
    pub wait: std::time::Duration,
}

impl Default for Thaw {
    fn default() -> Self {
        Thaw {
            tier: "Standard".into(),
            wait: std::time::Duration::ZERO,
        }
    }
}

/// Makes the objects `keys` of backup `id` readable: an archived one gets a restore request;
/// then this waits up to `thaw.wait` (checking again after 5 s, then twice as long each time,
/// at most 5 min) until every one is restored, and otherwise fails with "not ready", saying
/// what was asked and when it should be done. An object that does not exist is left to the
/// download to report.
pub async fn ensure_readable(
    storage: &crate::storage::Storage,
    id: &str,
    keys: &[&str],
    thaw: &Thaw,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    let mut pause = std::time::Duration::from_secs(5);
    let until = std::time::Instant::now() + thaw.wait;
    loop {
        let mut pending = Vec::new();
        for key in keys {
            match storage.readiness(key).await? {
                Some(Readiness::Archived { class }) => {
                    storage
                        .request_restore(key, RESTORE_DAYS, &thaw.tier)
                        .await?;
                    tracing::info!(
                        "requested a restore of `{}` ({class}, tier {}, readable for {RESTORE_DAYS} days)",
                        storage.display(key),
                        thaw.tier
                    );
                    pending.push(class);
                }
                Some(Readiness::Restoring { class }) => pending.push(class),
                _ => {}
            }
        }
        let Some(class) = pending.first() else {
            return Ok(());
        };
        let when = usual_wait(&thaw.tier, class);
        let now = std::time::Instant::now();
        if now >= until {
            return Err(Error::NotReady(format!(
                "backup `{id}` is in `{class}`: a restore of {} objects (tier {}) is under way, usually done {when}; run this again then, or wait for it with `--wait SECONDS`",
                pending.len(),
                thaw.tier
            )));
        }
        let pause_now = pause.min(until - now);
        tracing::info!(
            "waiting for the restore of backup `{id}` from `{class}` (tier {}, usually done {when})",
            thaw.tier
        );
        tokio::select! {
            () = tokio::time::sleep(pause_now) => {}
            () = cancel.cancelled() => {
                return Err(Error::Interrupted(format!("stopped waiting for the restore of backup `{id}`")));
            }
        }
        pause = (pause * 2).min(std::time::Duration::from_secs(300));
    }
}

impl S3Api {
    /// Whether an object can be read now; `None` if it does not exist.
    pub async fn readiness(&self, key: &str) -> Result<Option<Readiness>> {
        let Some(headers) = self.head(key, None, "checking").await? else {
            return Ok(None);
        };
        Ok(Some(Readiness::from_headers(
            headers.get("x-amz-storage-class").map(String::as_str),
            headers.get("x-amz-restore").map(String::as_str),
        )))
    }

    /// Asks for a readable copy of an archived object for `days` days, served at `tier`; one
    /// already on its way is no error.
    pub async fn request_restore(&self, key: &str, days: u32, tier: &str) -> Result<()> {
        let display = self.display(key);
        let mut url = self.object_url(key)?;
        url.set_query(Some("restore"));
        let body = format!(
            "<RestoreRequest xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Days>{days}</Days>\
             <GlacierJobParameters><Tier>{tier}</Tier></GlacierJobParameters></RestoreRequest>"
        );
        match self
            .send_xml(
                "requesting the restore of",
                &display,
                reqwest::Method::POST,
                url,
                body,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(Error::Storage { message, .. }) if message.contains("RestoreAlreadyInProgress") => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_comes_from_the_class_and_the_restore_header() {
        assert_eq!(Readiness::from_headers(None, None), Readiness::Readable);
        assert_eq!(
            Readiness::from_headers(Some("STANDARD_IA"), None),
            Readiness::Readable
        );
        assert_eq!(
            Readiness::from_headers(Some("GLACIER_IR"), None),
            Readiness::Readable
        );
        assert_eq!(
            Readiness::from_headers(Some("GLACIER"), None),
            Readiness::Archived {
                class: "GLACIER".into()
            }
        );
        assert_eq!(
            Readiness::from_headers(Some("DEEP_ARCHIVE"), Some("ongoing-request=\"true\"")),
            Readiness::Restoring {
                class: "DEEP_ARCHIVE".into()
            }
        );
        let restored = Readiness::from_headers(
            Some("GLACIER"),
            Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""),
        );
        assert_eq!(
            restored,
            Readiness::Restored {
                class: "GLACIER".into(),
                until: Some("Fri, 21 Dec 2012 00:00:00 GMT".into())
            }
        );
        assert!(restored.readable());
        assert_eq!(usual_wait("Expedited", "GLACIER"), "within 1 to 5 minutes");
        assert_eq!(usual_wait("Standard", "DEEP_ARCHIVE"), "within 12 hours");
    }
}
