//! The one retry policy: which failures are tried again, how often and how far apart. OpenDAL
//! applies it to its requests (each part of an upload and each range of a download is retried
//! on its own, since it holds its bytes); lifeboat's own S3 requests run through [`RetryPolicy::run`].
//! A failure is retried when it may pass: a connection refused, reset or timed out, a 5xx, a
//! 429 or `SlowDown`; never a refusal (4xx) or damaged data.

use std::future::Future;
use std::time::Duration;

use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all (the first and the retries).
    pub attempts: usize,
    pub min_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    /// Four retries, backing off from 200 ms to 8 s, with jitter.
    fn default() -> Self {
        RetryPolicy {
            attempts: 5,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(8),
        }
    }
}

impl RetryPolicy {
    /// OpenDAL's retry layer, with this policy.
    pub fn opendal_layer(&self) -> opendal::layers::RetryLayer {
        opendal::layers::RetryLayer::new()
            .with_max_times(self.attempts.saturating_sub(1))
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_jitter()
    }

    /// The pause before try `attempt` (2, 3, ...): doubling from the minimum, capped, with up
    /// to half of it again at random.
    pub fn delay(&self, attempt: usize) -> Duration {
        let doubled = self
            .min_delay
            .saturating_mul(1 << attempt.saturating_sub(2).min(16) as u32)
            .min(self.max_delay);
        let jitter = doubled.mul_f64(rand::random::<f64>() * 0.5);
        doubled + jitter
    }

    /// Runs `attempt` until it succeeds, fails for good, or the tries are spent.
    pub async fn run<T, F, Fut>(&self, what: &str, mut attempt: F) -> Result<T>
    where
        F: FnMut(usize) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut n = 1;
        loop {
            match attempt(n).await {
                Ok(value) => return Ok(value),
                Err(e) if worth_retrying(&e) && n < self.attempts => {
                    let pause = self.delay(n + 1);
                    tracing::debug!("{what}: {e}; trying again in {pause:?}");
                    tokio::time::sleep(pause).await;
                    n += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Whether a failed storage request may pass if sent again: the storage was unreachable or
/// slow, or the local side of a transfer broke.
fn worth_retrying(e: &Error) -> bool {
    match e {
        Error::Storage { kind, .. } => kind.is_temporary(),
        Error::Io { .. } => true,
        _ => false,
    }
}

/// Whether an HTTP status may pass if the request is sent again.
pub fn status_is_retryable(status: u16) -> bool {
    // 501 Not Implemented and 505 will say the same next time.
    (status >= 500 && !matches!(status, 501 | 505)) || status == 429 || status == 408
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_status_says_about_trying_again() {
        for again in [500, 502, 503, 504, 429, 408] {
            assert!(status_is_retryable(again), "{again}");
        }
        for not in [400, 403, 404, 409, 412, 501, 505] {
            assert!(!status_is_retryable(not), "{not}");
        }
    }
    use crate::error::Error;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn delays_double_and_stay_bounded() {
        let p = RetryPolicy::default();
        for attempt in 2..20 {
            let d = p.delay(attempt);
            assert!(
                d >= p.min_delay && d <= p.max_delay.mul_f64(1.5),
                "{attempt}: {d:?}"
            );
        }
        assert!(p.delay(2) < Duration::from_millis(301));
    }

    #[tokio::test]
    async fn transient_failures_are_retried_and_refusals_are_not() {
        let p = RetryPolicy {
            attempts: 5,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
        };
        let tries = AtomicUsize::new(0);
        let out: Result<u32> = p
            .run("x", |n| {
                tries.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err(Error::Storage {
                            op: "reading",
                            path: "k".into(),
                            kind: crate::error::StorageFailure::Unavailable,
                            message: "503".into(),
                        })
                    } else {
                        Ok(7)
                    }
                }
            })
            .await;
        assert_eq!(out.unwrap(), 7);
        assert_eq!(tries.load(Ordering::SeqCst), 3);
        tries.store(0, Ordering::SeqCst);
        let out: Result<u32> = p
            .run("x", |_| {
                tries.fetch_add(1, Ordering::SeqCst);
                async {
                    Err(Error::Storage {
                        op: "reading",
                        path: "k".into(),
                        kind: crate::error::StorageFailure::Denied,
                        message: "403".into(),
                    })
                }
            })
            .await;
        assert!(out.is_err());
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }
}
