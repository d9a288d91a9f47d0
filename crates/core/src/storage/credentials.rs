//! The keys of an S3 account, for every request to it: OpenDAL's and lifeboat's own signed
//! ones (Object Lock, tiers, lifecycle, ranges) get them from one loader, so that they never
//! disagree. The keys named in the configuration, where it names them; else the standard AWS
//! chain (reqsign's, the SDKs' order): `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` (and
//! `AWS_SESSION_TOKEN`), the shared files' profile (`AWS_PROFILE`, else `default`), a web
//! identity (`AWS_WEB_IDENTITY_TOKEN_FILE` with `AWS_ROLE_ARN`), then the instance's role
//! (EC2 metadata, unless `AWS_EC2_METADATA_DISABLED=true`). Where the keys come from is said
//! (`config check`, `doctor`), never the keys; an account no source gives keys for is
//! refused when its storage is opened.

use std::sync::Arc;

use reqsign::{AwsConfig, AwsCredential, AwsDefaultLoader};

use crate::config::S3Access;
use crate::error::{Error, Result, StorageFailure};

/// Where an account's keys come from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum KeySource {
    Configuration,
    Environment,
    Profile(String),
    WebIdentity,
    InstanceRole,
}

impl std::fmt::Display for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeySource::Configuration => f.write_str("the configuration"),
            KeySource::Environment => f.write_str("the environment (AWS_ACCESS_KEY_ID)"),
            KeySource::Profile(name) => write!(f, "the AWS profile `{name}`"),
            KeySource::WebIdentity => {
                f.write_str("a web identity (AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN)")
            }
            KeySource::InstanceRole => f.write_str("the instance's role (EC2 metadata)"),
        }
    }
}

/// The standard chain's settings, as this process's environment and AWS files give them.
fn chain() -> AwsConfig {
    AwsConfig::default().from_profile().from_env()
}

/// Where the keys of `access` come from, told without asking anyone (the instance's role is
/// only known to answer when asked); `None` when no source would give any.
pub fn source(access: &S3Access) -> Option<KeySource> {
    if access.access_key_id.is_some() && access.secret_access_key.is_some() {
        return Some(KeySource::Configuration);
    }
    let set = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    if set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY") {
        return Some(KeySource::Environment);
    }
    let chain = chain();
    if chain.access_key_id.is_some() && chain.secret_access_key.is_some() {
        return Some(KeySource::Profile(chain.profile.clone()));
    }
    if chain.web_identity_token_file.is_some() && chain.role_arn.is_some() {
        return Some(KeySource::WebIdentity);
    }
    (!chain.ec2_metadata_disabled).then_some(KeySource::InstanceRole)
}

/// The keys of one account, loaded once and renewed as they expire.
pub struct Keys {
    source: KeySource,
    fixed: Option<AwsCredential>,
    loader: Option<AwsDefaultLoader>,
    /// The account, for messages.
    location: String,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys(from {} for `{}`)", self.source, self.location)
    }
}

impl Keys {
    /// The keys of `access` (the account at `location`): refused when no source gives any.
    pub fn for_account(
        access: &S3Access,
        location: &str,
        client: reqwest::Client,
    ) -> Result<Arc<Keys>> {
        let source = source(access).ok_or_else(|| {
            Error::Config(format!(
                "no credentials for `{location}`: set `access_key_id` and `secret_access_key` (or their `_file`s), or give them as AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, an AWS profile (AWS_PROFILE), a web identity or an instance role"
            ))
        })?;
        let fixed = match (&source, &access.access_key_id, &access.secret_access_key) {
            (KeySource::Configuration, Some(id), Some(secret)) => Some(AwsCredential {
                access_key_id: id.expose().to_string(),
                secret_access_key: secret.expose().to_string(),
                session_token: None,
                expires_in: None,
            }),
            _ => None,
        };
        let loader = fixed
            .is_none()
            .then(|| AwsDefaultLoader::new(client, chain()));
        Ok(Arc::new(Keys {
            source,
            fixed,
            loader,
            location: location.to_string(),
        }))
    }

    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The keys to sign a request with.
    pub async fn get(&self) -> Result<AwsCredential> {
        if let Some(fixed) = &self.fixed {
            return Ok(fixed.clone());
        }
        let loader = self
            .loader
            .as_ref()
            .expect("a loader where no keys are fixed");
        let denied = |why: String| Error::Storage {
            op: "signing a request to",
            path: self.location.clone(),
            kind: StorageFailure::Denied,
            message: format!("no credentials from {}: {why}", self.source),
        };
        match loader.load().await {
            Ok(Some(keys)) => Ok(keys),
            Ok(None) => Err(denied("none given".into())),
            Err(e) => Err(denied(crate::error::one_line(&e.to_string()))),
        }
    }
}

/// The keys as OpenDAL's S3 service asks for them.
pub struct ForOpendal(pub Arc<Keys>);

#[async_trait::async_trait]
impl reqsign::AwsCredentialLoad for ForOpendal {
    async fn load_credential(&self, _: reqwest::Client) -> anyhow::Result<Option<AwsCredential>> {
        self.0
            .get()
            .await
            .map(Some)
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}
