//! A network link between the S3 server and its clients, as slow as a real one: a bandwidth
//! each way, shared by every connection (a link's, not a connection's), and a delay before
//! each request is answered (the round trip). Loopback has neither, which hides what a
//! restore that overlaps its download with its loading gains over one that downloads first.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The link's bandwidth and delay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinkOptions {
    /// Bytes per second each way.
    pub bytes_per_second: u64,
    /// Added before each request is served.
    pub latency: Duration,
}

impl LinkOptions {
    /// `mbit` megabits per second each way, `millis` of delay per request.
    pub fn mbit(mbit: u64, millis: u64) -> LinkOptions {
        LinkOptions {
            bytes_per_second: (mbit * 1_000_000 / 8).max(1),
            latency: Duration::from_millis(millis),
        }
    }
}

/// One direction of the link: when it is next free, as bytes are booked through it.
#[derive(Debug)]
pub(crate) struct Lane {
    bytes_per_second: u64,
    free_at: Mutex<Instant>,
}

impl Lane {
    fn new(bytes_per_second: u64) -> Arc<Lane> {
        Arc::new(Lane {
            bytes_per_second: bytes_per_second.max(1),
            free_at: Mutex::new(Instant::now()),
        })
    }

    /// Books `n` bytes after those already booked; returns when they have gone through.
    fn book(&self, n: usize) -> Instant {
        self.book_at(n, Instant::now())
    }

    /// [`Lane::book`] at time `now`.
    fn book_at(&self, n: usize, now: Instant) -> Instant {
        let mut free_at = self.free_at.lock().expect("lane");
        let start = (*free_at).max(now);
        let nanos = n as u128 * 1_000_000_000 / u128::from(self.bytes_per_second);
        *free_at = start + Duration::from_nanos(nanos as u64);
        *free_at
    }
}

/// The most bytes booked at once: small enough that connections share the lane fairly.
const SLICE: usize = 64 << 10;

/// The two lanes of a link: what the server writes goes down, what it reads came up.
#[derive(Debug, Clone)]
pub(crate) struct Lanes {
    down: Arc<Lane>,
    up: Arc<Lane>,
}

impl Lanes {
    pub(crate) fn new(link: LinkOptions) -> Lanes {
        Lanes {
            down: Lane::new(link.bytes_per_second),
            up: Lane::new(link.bytes_per_second),
        }
    }
}

/// A connection through the link (straight through when there is none), each way no faster
/// than its lane allows.
pub(crate) struct Throttled<S> {
    inner: S,
    lanes: Option<Lanes>,
    /// Bytes booked to be written and the wait until they may be.
    writing: Option<(usize, Pin<Box<Sleep>>)>,
    /// Bytes read, how many of them handed on, and the wait until they have come through.
    reading: Option<(Vec<u8>, usize, Pin<Box<Sleep>>)>,
}

impl<S> Throttled<S> {
    pub(crate) fn new(inner: S, lanes: Option<Lanes>) -> Throttled<S> {
        Throttled {
            inner,
            lanes,
            writing: None,
            reading: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Throttled<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let Some(lanes) = &this.lanes else {
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        };
        if this.reading.is_none() {
            // Take what has come, and hand it on once it has come through the link.
            let mut scratch = vec![0u8; SLICE];
            let mut slice = ReadBuf::new(&mut scratch);
            std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut slice))?;
            let n = slice.filled().len();
            if n == 0 {
                return Poll::Ready(Ok(()));
            }
            scratch.truncate(n);
            let wait = Box::pin(tokio::time::sleep_until(lanes.up.book(n)));
            this.reading = Some((scratch, 0, wait));
        }
        let (held, at, wait) = this.reading.as_mut().expect("set above");
        std::task::ready!(wait.as_mut().poll(cx));
        let n = buf.remaining().min(held.len() - *at);
        buf.put_slice(&held[*at..*at + n]);
        *at += n;
        if *at == held.len() {
            this.reading = None;
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Throttled<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let Some(lanes) = this.lanes.as_ref().filter(|_| !buf.is_empty()) else {
            return Pin::new(&mut this.inner).poll_write(cx, buf);
        };
        let (booked, wait) = this.writing.get_or_insert_with(|| {
            let n = buf.len().min(SLICE);
            (n, Box::pin(tokio::time::sleep_until(lanes.down.book(n))))
        });
        if wait.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        let n = (*booked).min(buf.len());
        let written = Pin::new(&mut this.inner).poll_write(cx, &buf[..n]);
        if written.is_ready() {
            this.writing = None;
        }
        written
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_booked_through_a_lane_queue_behind_those_before_them() {
        let lane = Lane::new(1000);
        let start = *lane.free_at.lock().unwrap();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(lane.book_at(500, start) - start, ms(500));
        // Booked at the same moment: after the first.
        assert_eq!(lane.book_at(1000, start + ms(100)) - start, ms(1500));
        // Once the lane has been idle, bookings start from then.
        assert_eq!(lane.book_at(100, start + ms(5000)) - start, ms(5100));
    }

    #[test]
    fn a_server_behind_a_link_serves_the_same_bytes_no_faster_than_the_link() {
        use crate::{S3Server, ServeOptions};
        let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        let fast = S3Server::start("k", "secret-key");
        fast.create_bucket("bucket");
        fast.put("bucket", "x", data.clone(), None, &[]);
        let slow = S3Server::start_with(
            "k",
            "secret-key",
            ServeOptions {
                // 8 Mbit/s: 1 MB/s each way; 100 ms per request.
                link: Some(LinkOptions::mbit(8, 100)),
                ..Default::default()
            },
        );
        slow.create_bucket("bucket");
        let begun = std::time::Instant::now();
        slow.put("bucket", "x", data.clone(), None, &[]);
        let up = begun.elapsed();
        let begun = std::time::Instant::now();
        let got = slow.get("bucket", "x").expect("stored");
        let down = begun.elapsed();
        assert_eq!(got.data, data);
        assert_eq!(fast.get("bucket", "x").expect("stored").data, data);
        // 1 MiB at 1 MB/s is 1.05 s, each way (the get also asks for the object's metadata).
        assert!(up >= Duration::from_millis(1000), "uploaded in {up:?}");
        assert!(
            down >= Duration::from_millis(1000),
            "downloaded in {down:?}"
        );
    }
}
