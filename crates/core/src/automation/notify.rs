//! Notifications of a run: a Slack message, a JSON webhook, and health-check pings.
//!
//! Failures are always sent, successes when `on_success` is set; the health-check URL is
//! pinged at the start and the end of every run, so that a run that never happened is noticed
//! by the checker. Messages are JSON built here, never text pasted into a shell. Webhook URLs
//! carry tokens: they are named in logs by their host only. A notification that cannot be
//! delivered is logged; it never fails the run.

use std::time::Duration;

use super::report::RunReport;
use crate::config::{NotifyConfig, Secret};

#[derive(Debug, Clone, Copy)]
pub enum Ping {
    Start,
    Success,
    Fail,
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap_or_default()
}

/// The host of a URL, for messages.
fn host_of(url: &Secret) -> String {
    url::Url::parse(url.expose())
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "an unparsable URL".into())
}

pub async fn ping(config: &NotifyConfig, ping: Ping) {
    let Some(url) = &config.healthcheck else {
        return;
    };
    let base = url.expose().trim_end_matches('/');
    let target = match ping {
        Ping::Start => format!("{base}/start"),
        Ping::Success => base.to_string(),
        Ping::Fail => format!("{base}/fail"),
    };
    match client().get(&target).send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(
            "health-check ping to `{}` answered {}",
            host_of(url),
            r.status()
        ),
        Err(_) => tracing::warn!("health-check ping to `{}` failed", host_of(url)),
    }
}

/// The one-paragraph summary of a run, as Slack shows it.
pub fn summary(report: &RunReport) -> String {
    let failed = report.failed();
    let mut text = if failed.is_empty() {
        format!(
            "lifeboat `{}` on `{}` succeeded in {}",
            report.job,
            report.host,
            crate::units::human_duration(report.seconds)
        )
    } else {
        format!(
            "lifeboat `{}` on `{}`: {} of {} steps FAILED",
            report.job,
            report.host,
            failed.len(),
            report.steps.len()
        )
    };
    for step in &report.steps {
        text.push_str(&format!(
            "\n{} {} ({}{}): {}",
            if step.ok { "ok" } else { "FAILED" },
            step.step,
            crate::units::human_duration(step.seconds),
            step.bytes
                .map(|b| format!(", {}", crate::units::human_bytes(b)))
                .unwrap_or_default(),
            step.detail
        ));
    }
    text
}

pub async fn send(config: &NotifyConfig, report: &RunReport) {
    ping(config, if report.ok { Ping::Success } else { Ping::Fail }).await;
    if report.ok && !config.on_success {
        return;
    }
    let client = client();
    if let Some(url) = &config.slack_webhook {
        let mark = if report.ok {
            ":white_check_mark:"
        } else {
            ":rotating_light:"
        };
        let body = serde_json::json!({ "text": format!("{mark} {}", summary(report)) });
        deliver(&client, url, &body, "Slack").await;
    }
    if let Some(url) = &config.webhook {
        let mut body = serde_json::to_value(report).expect("reports serialize");
        body["summary"] = summary(report).into();
        deliver(&client, url, &body, "webhook").await;
    }
}

/// An alert outside any run (a segment `wal-push` let PostgreSQL drop): always sent, to Slack
/// and the webhook (`{"alert": ..., "host": ...}`).
pub async fn alert(config: &NotifyConfig, message: &str) {
    let client = client();
    let host = crate::process::host_name();
    if let Some(url) = &config.slack_webhook {
        let body = serde_json::json!({ "text": format!(":rotating_light: lifeboat on `{host}`: {message}") });
        deliver(&client, url, &body, "Slack").await;
    }
    if let Some(url) = &config.webhook {
        let body = serde_json::json!({ "alert": message, "host": host, "summary": message });
        deliver(&client, url, &body, "webhook").await;
    }
}

async fn deliver(client: &reqwest::Client, url: &Secret, body: &serde_json::Value, what: &str) {
    let outcome = client
        .post(url.expose())
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    match outcome {
        Ok(r) if r.status().is_success() => tracing::info!("{what} notified (`{}`)", host_of(url)),
        Ok(r) => tracing::warn!(
            "{what} notification to `{}` answered {}",
            host_of(url),
            r.status()
        ),
        Err(_) => tracing::warn!(
            "{what} notification to `{}` could not be delivered",
            host_of(url)
        ),
    }
}
