//! Streamed uploads in bounded memory: into a local file written in place of staging, and as
//! an S3 multipart upload with at most `concurrency` parts in flight.
//!
//! OpenDAL's writers (0.55) keep every finished part's buffer until the writer closes (their
//! task queue holds up to 8,192 finished tasks with their inputs), so an upload held the whole
//! backup in memory. Here a part's buffer is dropped as soon as it is stored, whatever the size
//! of the upload: memory is `part_size × (concurrency + 1)`.

use std::path::PathBuf;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio::task::JoinSet;

use super::backend::{Upload, UploadOptions};
use super::s3::api::{encode_query, error_code, name, Request, S3Api};
use crate::error::{Error, Result, StorageFailure};
use http::HeaderName;

/// The multipart requests, on lifeboat's S3 client.
impl S3Api {
    /// A request on one object with `query` (`uploads`, `uploadId=...`; empty: none), retried
    /// as a whole; the answer's body.
    pub(super) async fn object_request(
        &self,
        op: &'static str,
        key: &str,
        query: &str,
        method: reqwest::Method,
        headers: &[(HeaderName, String)],
        body: Option<Bytes>,
    ) -> Result<String> {
        let display = self.display(key);
        let mut url = self.object_url(key)?;
        if !query.is_empty() {
            url.set_query(Some(query));
        }
        let response = self
            .send(&Request {
                op,
                display: &display,
                method,
                url,
                headers,
                body,
            })
            .await?;
        Ok(response.text().await.unwrap_or_default())
    }

    /// Stores part `number` of multipart upload `upload_id`; its ETag.
    pub(super) async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: u32,
        part: Bytes,
    ) -> Result<String> {
        let display = self.display(key);
        let mut url = self.object_url(key)?;
        url.set_query(Some(&format!(
            "partNumber={number}&uploadId={}",
            encode_query(upload_id)
        )));
        let response = self
            .send(&Request {
                op: "uploading",
                display: &display,
                method: reqwest::Method::PUT,
                url,
                headers: &[],
                body: Some(part),
            })
            .await?;
        response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_string())
            .ok_or_else(|| Error::Storage {
                op: "uploading",
                path: display,
                kind: StorageFailure::Refused,
                message: format!("part {number} was stored without an ETag"),
            })
    }
}

/// A file written under the repository's staging folder, renamed into place when closed;
/// removed (by `tempfile`) when aborted or dropped unfinished.
///
/// What is written is synced while later parts are written (one sync at a time, on a blocking
/// thread), so that the sync that closes the upload has only its last parts left to write out
/// rather than the whole file: the page cache can hold gigabytes of a large backup.
pub(super) struct LocalUpload {
    staged: Option<(tokio::fs::File, tempfile::TempPath)>,
    /// The same open file, for the syncs.
    syncer: std::sync::Arc<std::fs::File>,
    syncing: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    target: PathBuf,
    display: String,
}

impl LocalUpload {
    pub(super) async fn start(
        staging: PathBuf,
        target: PathBuf,
        display: String,
    ) -> Result<LocalUpload> {
        let staged = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&staging)?;
            tempfile::Builder::new()
                .prefix(".upload-")
                .tempfile_in(&staging)
        })
        .await
        .map_err(|e| Error::thread("file", e))?
        .map_err(|e| Error::io(format!("uploading `{display}`"), e))?;
        let (file, path) = staged.into_parts();
        let syncer = file
            .try_clone()
            .map_err(|e| Error::io(format!("uploading `{display}`"), e))?;
        Ok(LocalUpload {
            staged: Some((tokio::fs::File::from_std(file), path)),
            syncer: std::sync::Arc::new(syncer),
            syncing: None,
            target,
            display,
        })
    }

    fn io(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} `{}`", self.display), e)
    }

    /// Waits for the sync under way, if any; its failure is the upload's.
    async fn synced(&mut self) -> Result<()> {
        match self.syncing.take() {
            Some(syncing) => syncing
                .await
                .map_err(|e| Error::thread("file sync", e))?
                .map_err(|e| self.io("syncing", e)),
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        let Some((file, _)) = self.staged.as_mut() else {
            return Err(over(&self.display));
        };
        let written = file.write_all(&chunk).await;
        written.map_err(|e| self.io("uploading", e))?;
        if self.syncing.as_ref().is_none_or(|s| s.is_finished()) {
            self.synced().await?;
            let file = self.syncer.clone();
            self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(())
    }

    async fn close(&mut self) -> Result<()> {
        let Some((mut file, path)) = self.staged.take() else {
            return Ok(());
        };
        self.synced().await?;
        let done = async {
            file.flush().await?;
            file.sync_all().await?;
            drop(file);
            if let Some(parent) = self.target.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            path.persist(&self.target).map_err(|e| e.error)?;
            if let Some(parent) = self.target.parent() {
                tokio::fs::File::open(parent).await?.sync_all().await?;
            }
            Ok::<_, std::io::Error>(())
        }
        .await;
        done.map_err(|e| self.io("completing", e))
    }

    async fn abort(&mut self) -> Result<()> {
        if let Some((file, path)) = self.staged.take() {
            drop(file);
            path.close().map_err(|e| self.io("aborting", e))?;
        }
        Ok(())
    }
}

fn over(display: &str) -> Error {
    Error::Storage {
        op: "uploading",
        path: display.to_string(),
        kind: StorageFailure::Refused,
        message: "the upload is over".into(),
    }
}

/// An S3 multipart upload, started with the second part (one part is one PUT).
pub(super) struct S3Upload {
    api: S3Api,
    key: String,
    display: String,
    options: UploadOptions,
    /// The first part, held until a second one shows the upload needs parts.
    first: Option<Bytes>,
    upload_id: Option<String>,
    next_part: u32,
    in_flight: JoinSet<Result<(u32, String)>>,
    stored: Vec<(u32, String)>,
    over: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Initiated {
    upload_id: String,
}

impl S3Upload {
    pub(super) fn new(api: S3Api, key: &str, display: String, options: UploadOptions) -> S3Upload {
        S3Upload {
            api,
            key: key.to_string(),
            display,
            options,
            first: None,
            upload_id: None,
            next_part: 1,
            in_flight: JoinSet::new(),
            stored: Vec::new(),
            over: false,
        }
    }

    /// The object's headers: storage class, content type, user metadata.
    fn headers(&self) -> Result<Vec<(HeaderName, String)>> {
        let mut headers = Vec::new();
        if let Some(class) = &self.options.storage_class {
            headers.push((name("x-amz-storage-class"), class.clone()));
        }
        if let Some(content_type) = &self.options.content_type {
            headers.push((name("content-type"), content_type.clone()));
        }
        for (key, value) in &self.options.user_metadata {
            let header = HeaderName::try_from(format!("x-amz-meta-{key}"))
                .map_err(|_| Error::Internal(format!("`{key}` cannot be an S3 metadata name")))?;
            headers.push((header, value.clone()));
        }
        Ok(headers)
    }

    async fn upload_id(&mut self) -> Result<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let headers = self.headers()?;
        let body = self
            .api
            .object_request(
                "starting",
                &self.key,
                "uploads",
                reqwest::Method::POST,
                &headers,
                None,
            )
            .await?;
        let id = quick_xml::de::from_str::<Initiated>(&body)
            .map_err(|e| Error::Storage {
                op: "starting",
                path: self.display.clone(),
                kind: StorageFailure::Refused,
                message: format!("cannot read the answer to CreateMultipartUpload: {e}"),
            })?
            .upload_id;
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Sends `part` once fewer than `concurrency` are in flight.
    async fn send_part(&mut self, part: Bytes) -> Result<()> {
        let upload_id = self.upload_id().await?;
        while self.in_flight.len() >= self.options.concurrency.max(1) {
            self.collect_one().await?;
        }
        let number = self.next_part;
        self.next_part += 1;
        let api = self.api.clone();
        let key = self.key.clone();
        self.in_flight.spawn(async move {
            let etag = api.upload_part(&key, &upload_id, number, part).await?;
            Ok((number, etag))
        });
        Ok(())
    }

    async fn collect_one(&mut self) -> Result<()> {
        match self.in_flight.join_next().await {
            Some(done) => {
                let stored = done.map_err(|e| Error::thread("upload part", e))??;
                self.stored.push(stored);
                Ok(())
            }
            None => Ok(()),
        }
    }
}

#[async_trait::async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> Result<()> {
        if self.over {
            return Err(over(&self.display));
        }
        if self.upload_id.is_none() && self.first.is_none() {
            self.first = Some(chunk);
            return Ok(());
        }
        if let Some(first) = self.first.take() {
            self.send_part(first).await?;
        }
        self.send_part(chunk).await
    }

    async fn close(&mut self) -> Result<()> {
        if self.over {
            return Ok(());
        }
        self.over = true;
        let Some(upload_id) = self.upload_id.clone() else {
            // One part or none: one PUT.
            let body = self.first.take().unwrap_or_default();
            let headers = self.headers()?;
            self.api
                .object_request(
                    "writing",
                    &self.key,
                    "",
                    reqwest::Method::PUT,
                    &headers,
                    Some(body),
                )
                .await?;
            return Ok(());
        };
        while !self.in_flight.is_empty() {
            self.collect_one().await?;
        }
        self.stored.sort_by_key(|(number, _)| *number);
        let xml = complete_xml(&self.stored)?;
        let answer = self
            .api
            .object_request(
                "completing",
                &self.key,
                &format!("uploadId={}", encode_query(&upload_id)),
                reqwest::Method::POST,
                &[(name("content-type"), "application/xml".to_string())],
                Some(Bytes::from(xml)),
            )
            .await?;
        // S3 may answer 200 with an error document when completion fails late.
        if let Some((code, message)) = error_code(&answer) {
            return Err(Error::Storage {
                op: "completing",
                path: self.display.clone(),
                kind: StorageFailure::Unavailable,
                message: format!("{code}: {}", message.unwrap_or_default()),
            });
        }
        Ok(())
    }

    async fn abort(&mut self) -> Result<()> {
        self.over = true;
        self.first = None;
        self.in_flight.abort_all();
        while self.in_flight.join_next().await.is_some() {}
        if let Some(upload_id) = self.upload_id.take() {
            self.api
                .object_request(
                    "aborting",
                    &self.key,
                    &format!("uploadId={}", encode_query(&upload_id)),
                    reqwest::Method::DELETE,
                    &[],
                    None,
                )
                .await?;
        }
        Ok(())
    }
}

/// The body of `CompleteMultipartUpload`: every part, in order, with its ETag quoted.
#[derive(Serialize)]
#[serde(rename = "CompleteMultipartUpload")]
struct CompleteXml {
    #[serde(rename = "Part")]
    parts: Vec<PartXml>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct PartXml {
    part_number: u32,
    #[serde(rename = "ETag")]
    etag: String,
}

fn complete_xml(stored: &[(u32, String)]) -> Result<String> {
    let body = CompleteXml {
        parts: stored
            .iter()
            .map(|(number, etag)| PartXml {
                part_number: *number,
                etag: format!("\"{}\"", etag.trim_matches('"')),
            })
            .collect(),
    };
    quick_xml::se::to_string(&body)
        .map_err(|e| Error::Internal(format!("cannot write CompleteMultipartUpload: {e}")))
}

#[cfg(test)]
mod complete_tests {
    use super::*;

    #[test]
    fn completion_lists_the_parts_and_a_late_error_document_is_read() {
        let xml = complete_xml(&[(1, "\"a&b\"".into()), (2, "c".into())]).unwrap();
        assert_eq!(
            xml,
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a&amp;b\"</ETag></Part>\
             <Part><PartNumber>2</PartNumber><ETag>\"c\"</ETag></Part></CompleteMultipartUpload>"
        );
        let late = "<?xml version=\"1.0\"?>\n<Error><Code>InternalError</Code><Message>We encountered an internal error.</Message></Error>";
        assert_eq!(
            error_code(late),
            Some((
                "InternalError".into(),
                Some("We encountered an internal error.".into())
            ))
        );
        let ok =
            "<CompleteMultipartUploadResult><ETag>\"x-2\"</ETag></CompleteMultipartUploadResult>";
        assert_eq!(error_code(ok), None);
    }
}
