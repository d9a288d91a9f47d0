//! A physical replication connection, spoken by lifeboat itself: tokio-postgres has no
//! replication mode and no `CopyBoth`. `pg_receivewal` is the reference for what is said.
//!
//! The startup packet carries `replication=true`; authentication is the server's (trust,
//! password, MD5, SCRAM-SHA-256), over TLS as lifeboat's other connections (`sslmode` of the
//! URL) or a local socket. Then simple-protocol commands (`IDENTIFY_SYSTEM`,
//! `CREATE_REPLICATION_SLOT`, `READ_REPLICATION_SLOT`, `TIMELINE_HISTORY`, `SHOW`) and
//! `START_REPLICATION`, after which the server sends `XLogData` and keepalives and lifeboat
//! sends standby status updates. Reading and writing are split ([`Replication::split`]) so
//! that status updates go out while storage is slow and no message is read half.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_postgres::config::Host;

use super::conn::ConnInfo;
use crate::error::{Error, Result};

/// A position in the WAL.
pub type Lsn = u64;

/// `X/Y`, as PostgreSQL writes positions.
pub fn lsn_text(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Parses `X/Y`.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A replication connection before streaming.
pub struct Replication {
    io: Box<dyn Io>,
    what: String,
}

/// What `IDENTIFY_SYSTEM` says.
#[derive(Debug, Clone)]
pub struct System {
    pub system_id: u64,
    pub timeline: u32,
    pub position: Lsn,
}

/// A replication slot as `READ_REPLICATION_SLOT` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    Missing,
    /// It exists but holds no WAL (invalidated: `max_slot_wal_keep_size`).
    Empty,
    At {
        restart: Lsn,
        timeline: Option<u32>,
    },
}

/// What the server sends while streaming.
#[derive(Debug)]
pub enum Message {
    /// WAL from `start`.
    Data { start: Lsn, data: Bytes },
    /// A keepalive: the server's WAL end, and whether it wants a reply at once.
    Keepalive { end: Lsn, reply: bool },
    /// The server ends the stream (its timeline ended): answer with [`Sender::done`] once
    /// what was received is stored; [`Message::TimelineEnd`] follows.
    CopyDone,
    /// The timeline ended: the next one and where it starts (`None` when the server stopped).
    TimelineEnd(Option<(u32, Lsn)>),
}

/// A server error: its SQLSTATE and message. One that only the configuration mends (the
/// role refused, or not allowed to replicate) is a configuration error, saying what to fix.
fn server_error(what: &str, body: &[u8]) -> Error {
    let (code, message) = error_fields(body);
    if code.starts_with("28") || code == "42501" {
        return Error::Config(format!(
            "{what}: {message} (SQLSTATE {code}): lifeboat's role needs the REPLICATION attribute (`ALTER ROLE ... REPLICATION`) and a `replication` line in pg_hba.conf"
        ));
    }
    Error::Postgres {
        context: what.to_string(),
        message: format!("{message} (SQLSTATE {code})"),
    }
}

fn error_fields(body: &[u8]) -> (String, String) {
    let (mut code, mut message) = (String::new(), String::new());
    let mut rest = body;
    while let Some((&kind, tail)) = rest.split_first() {
        if kind == 0 {
            break;
        }
        let end = tail.iter().position(|b| *b == 0).unwrap_or(tail.len());
        let value = String::from_utf8_lossy(&tail[..end]).into_owned();
        match kind {
            b'C' => code = value,
            b'M' => message = value,
            _ => {}
        }
        rest = tail.get(end + 1..).unwrap_or_default();
    }
    (code, message)
}

/// Reads one message: its tag and body.
async fn read_message<R: AsyncRead + Unpin + ?Sized>(io: &mut R) -> std::io::Result<(u8, Bytes)> {
    let mut head = [0u8; 5];
    io.read_exact(&mut head).await?;
    let length = u32::from_be_bytes(head[1..5].try_into().expect("four bytes")) as usize;
    if !(4..=(1 << 30)).contains(&length) {
        return Err(std::io::Error::other(format!(
            "a message of length {length}: not the PostgreSQL protocol"
        )));
    }
    let mut body = vec![0u8; length - 4];
    io.read_exact(&mut body).await?;
    Ok((head[0], Bytes::from(body)))
}

fn io_error(what: &str, e: std::io::Error) -> Error {
    Error::Unreachable {
        what: what.to_string(),
        detail: e.to_string(),
    }
}

fn protocol(what: &str, detail: impl std::fmt::Display) -> Error {
    Error::Postgres {
        context: what.to_string(),
        message: format!("unexpected answer: {detail}"),
    }
}

impl Replication {
    /// Connects to the server `info` names in replication mode, as `application_name`.
    pub async fn connect(info: &ConnInfo, application_name: &str) -> Result<Replication> {
        let what = format!("replication connection to `{}`", info.redacted());
        let config = &info.config;
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let host = config
            .get_hosts()
            .first()
            .cloned()
            .unwrap_or_else(|| Host::Tcp("localhost".into()));
        let failed = |e: std::io::Error| io_error(&what, e);
        let mut io: Box<dyn Io> = match &host {
            Host::Unix(dir) => Box::new(
                tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                    .await
                    .map_err(failed)?,
            ),
            Host::Tcp(name) => {
                let tcp = tokio::net::TcpStream::connect((name.as_str(), port))
                    .await
                    .map_err(failed)?;
                let _ = tcp.set_nodelay(true);
                if info.uses_tls() {
                    Self::tls(info, tcp, name, &what).await?
                } else {
                    Box::new(tcp)
                }
            }
        };
        let user = config.get_user().unwrap_or("postgres").to_string();
        let mut buf = BytesMut::new();
        let params = [
            ("user", user.as_str()),
            ("database", info.dbname()),
            ("replication", "true"),
            ("application_name", application_name),
        ];
        frontend::startup_message(params.iter().copied(), &mut buf)
            .map_err(|e| protocol(&what, e))?;
        io.write_all(&buf).await.map_err(failed)?;
        let password = config.get_password().map(<[u8]>::to_vec);
        let mut scram: Option<ScramSha256> = None;
        loop {
            let (tag, mut body) = read_message(&mut io).await.map_err(failed)?;
            match tag {
                b'E' => return Err(server_error(&what, &body)),
                b'R' => {
                    let code = body.get_i32();
                    let need = || {
                        password.clone().ok_or_else(|| {
                            Error::Config(format!(
                                "{what} needs a password: set `password` in the `[postgres.NAME]` section"
                            ))
                        })
                    };
                    let mut out = BytesMut::new();
                    match code {
                        0 => continue,
                        3 => {
                            let mut p = need()?;
                            p.push(0);
                            frontend::password_message(&p, &mut out)
                                .map_err(|e| protocol(&what, e))?;
                        }
                        5 => {
                            let salt: [u8; 4] = body[..4]
                                .try_into()
                                .map_err(|_| protocol(&what, "an MD5 request without its salt"))?;
                            let hashed = postgres_protocol::authentication::md5_hash(
                                user.as_bytes(),
                                &need()?,
                                salt,
                            );
                            let mut p = hashed.into_bytes();
                            p.push(0);
                            frontend::password_message(&p, &mut out)
                                .map_err(|e| protocol(&what, e))?;
                        }
                        10 => {
                            let mechanisms = String::from_utf8_lossy(&body);
                            if !mechanisms.split('\0').any(|m| m == "SCRAM-SHA-256") {
                                return Err(protocol(
                                    &what,
                                    format!("no SCRAM-SHA-256 among {mechanisms:?}"),
                                ));
                            }
                            let s = ScramSha256::new(&need()?, ChannelBinding::unsupported());
                            frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                                .map_err(|e| protocol(&what, e))?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| protocol(&what, "SASL continue before start"))?;
                            s.update(&body).map_err(|e| protocol(&what, e))?;
                            frontend::sasl_response(s.message(), &mut out)
                                .map_err(|e| protocol(&what, e))?;
                        }
                        12 => {
                            scram
                                .as_mut()
                                .ok_or_else(|| protocol(&what, "SASL final before start"))?
                                .finish(&body)
                                .map_err(|e| protocol(&what, e))?;
                            continue;
                        }
                        other => {
                            return Err(protocol(
                                &what,
                                format!("authentication method {other} is not supported"),
                            ))
                        }
                    }
                    io.write_all(&out).await.map_err(failed)?;
                }
                b'Z' => break,
                // Parameters, the key for cancelling, notices.
                _ => {}
            }
        }
        Ok(Replication { io, what })
    }

    async fn tls(
        info: &ConnInfo,
        mut tcp: tokio::net::TcpStream,
        host: &str,
        what: &str,
    ) -> Result<Box<dyn Io>> {
        let mut buf = BytesMut::new();
        frontend::ssl_request(&mut buf);
        tcp.write_all(&buf).await.map_err(|e| io_error(what, e))?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer)
            .await
            .map_err(|e| io_error(what, e))?;
        if answer[0] != b'S' {
            if info.config.get_ssl_mode() == tokio_postgres::config::SslMode::Require
                || info.verify.is_some()
            {
                return Err(Error::Unreachable {
                    what: what.to_string(),
                    detail: "the server does not offer TLS, which `sslmode` requires".into(),
                });
            }
            return Ok(Box::new(tcp));
        }
        let config = super::tls::client_config(info.verify.as_ref())?;
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| Error::Config(format!("`{host}` is not a host name for TLS: {e}")))?;
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .map_err(|e| io_error(what, e))?;
        Ok(Box::new(stream))
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.io
            .write_all(bytes)
            .await
            .map_err(|e| io_error(&self.what, e))
    }

    /// Runs a simple-protocol command; its rows (text, `None` for NULL).
    pub async fn query(&mut self, sql: &str) -> Result<Vec<Vec<Option<String>>>> {
        let mut buf = BytesMut::new();
        frontend::query(sql, &mut buf).map_err(|e| protocol(&self.what, e))?;
        self.send(&buf).await?;
        let what = format!("{} running `{sql}`", self.what);
        let mut rows = Vec::new();
        let mut failed = None;
        loop {
            let (tag, body) = read_message(&mut self.io)
                .await
                .map_err(|e| io_error(&what, e))?;
            match tag {
                b'D' => rows.push(data_row(&body)),
                b'E' => failed = Some(server_error(&what, &body)),
                b'Z' => break,
                _ => {}
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(rows),
        }
    }

    /// `IDENTIFY_SYSTEM`.
    pub async fn identify_system(&mut self) -> Result<System> {
        let rows = self.query("IDENTIFY_SYSTEM").await?;
        let row = rows.first().ok_or_else(|| protocol(&self.what, "no row"))?;
        let field = |i: usize| row.get(i).cloned().flatten().unwrap_or_default();
        Ok(System {
            system_id: field(0)
                .parse()
                .map_err(|_| protocol(&self.what, "no system identifier"))?,
            timeline: field(1)
                .parse()
                .map_err(|_| protocol(&self.what, "no timeline"))?,
            position: parse_lsn(&field(2)).ok_or_else(|| protocol(&self.what, "no position"))?,
        })
    }

    /// `READ_REPLICATION_SLOT` (PostgreSQL 15 and later).
    pub async fn read_slot(&mut self, slot: &str) -> Result<Slot> {
        let rows = self
            .query(&format!(
                "READ_REPLICATION_SLOT {}",
                super::conn::quote_ident(slot)
            ))
            .await?;
        let Some(row) = rows.first() else {
            return Ok(Slot::Missing);
        };
        let field = |i: usize| row.get(i).cloned().flatten();
        if field(0).is_none() {
            return Ok(Slot::Missing);
        }
        Ok(match field(1).as_deref().and_then(parse_lsn) {
            None => Slot::Empty,
            Some(restart) => Slot::At {
                restart,
                timeline: field(2).and_then(|t| t.parse().ok()),
            },
        })
    }

    /// Creates physical slot `slot` holding WAL at once (`RESERVE_WAL`; it answers no
    /// position for a physical slot: [`Replication::read_slot`] says where).
    pub async fn create_slot(&mut self, slot: &str) -> Result<()> {
        self.query(&format!(
            "CREATE_REPLICATION_SLOT {} PHYSICAL RESERVE_WAL",
            super::conn::quote_ident(slot)
        ))
        .await
        .map(|_| ())
    }

    /// Drops slot `slot`.
    pub async fn drop_slot(&mut self, slot: &str) -> Result<()> {
        self.query(&format!(
            "DROP_REPLICATION_SLOT {}",
            super::conn::quote_ident(slot)
        ))
        .await
        .map(|_| ())
    }

    /// `TIMELINE_HISTORY`: the history file of `timeline`, its name and content.
    pub async fn timeline_history(&mut self, timeline: u32) -> Result<(String, Vec<u8>)> {
        let rows = self.query(&format!("TIMELINE_HISTORY {timeline}")).await?;
        let row = rows
            .first()
            .ok_or_else(|| protocol(&self.what, "no history"))?;
        let name = row.first().cloned().flatten().unwrap_or_default();
        let content = row.get(1).cloned().flatten().unwrap_or_default();
        Ok((name, content.into_bytes()))
    }

    /// `SHOW name`.
    pub async fn show(&mut self, name: &str) -> Result<String> {
        let rows = self.query(&format!("SHOW {name}")).await?;
        Ok(rows
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default())
    }

    /// `START_REPLICATION SLOT slot PHYSICAL start TIMELINE timeline`: the stream's halves.
    pub async fn start(
        mut self,
        slot: &str,
        start: Lsn,
        timeline: u32,
    ) -> Result<(Receiver, Sender)> {
        let sql = format!(
            "START_REPLICATION SLOT {} PHYSICAL {} TIMELINE {timeline}",
            super::conn::quote_ident(slot),
            lsn_text(start)
        );
        let mut buf = BytesMut::new();
        frontend::query(&sql, &mut buf).map_err(|e| protocol(&self.what, e))?;
        self.send(&buf).await?;
        let what = format!("{} running `{sql}`", self.what);
        loop {
            let (tag, body) = read_message(&mut self.io)
                .await
                .map_err(|e| io_error(&what, e))?;
            match tag {
                b'W' => break,
                b'E' => {
                    let e = server_error(&what, &body);
                    // The rest of the answer, up to ReadyForQuery, is not needed.
                    return Err(e);
                }
                // The timeline asked for ended before `start`: an empty result, then ready.
                b'Z' => return Err(protocol(&what, "no stream")),
                _ => {}
            }
        }
        let (read, write) = tokio::io::split(self.io);
        Ok((
            Receiver {
                io: Box::new(read),
                what: what.clone(),
                ended: false,
            },
            Sender {
                io: Box::new(write),
                what,
            },
        ))
    }
}

fn data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut body = body;
    if body.len() < 2 {
        return Vec::new();
    }
    let count = body.get_i16().max(0) as usize;
    let mut row = Vec::with_capacity(count);
    for _ in 0..count {
        if body.len() < 4 {
            break;
        }
        let length = body.get_i32();
        if length < 0 {
            row.push(None);
            continue;
        }
        let length = (length as usize).min(body.len());
        row.push(Some(String::from_utf8_lossy(&body[..length]).into_owned()));
        body.advance(length);
    }
    row
}

/// The reading half of a stream.
pub struct Receiver {
    io: Box<dyn AsyncRead + Unpin + Send>,
    what: String,
    ended: bool,
}

impl Receiver {
    /// The next message; after [`Message::TimelineEnd`] the stream is done.
    pub async fn next(&mut self) -> Result<Message> {
        loop {
            let (tag, mut body) = read_message(&mut self.io)
                .await
                .map_err(|e| io_error(&self.what, e))?;
            match tag {
                b'd' if !self.ended => {
                    if body.is_empty() {
                        continue;
                    }
                    match body.get_u8() {
                        b'w' if body.len() >= 24 => {
                            let start = body.get_u64();
                            body.advance(16);
                            return Ok(Message::Data { start, data: body });
                        }
                        b'k' if body.len() >= 17 => {
                            let end = body.get_u64();
                            body.advance(8);
                            return Ok(Message::Keepalive {
                                end,
                                reply: body.get_u8() != 0,
                            });
                        }
                        other => return Err(protocol(&self.what, format!("copy data `{other}`"))),
                    }
                }
                // The server ended the timeline; once answered ([`Sender::done`]), it says
                // where the next one starts.
                b'c' if !self.ended => {
                    self.ended = true;
                    return Ok(Message::CopyDone);
                }
                b'D' if self.ended => {
                    let row = data_row(&body);
                    let next = row
                        .first()
                        .cloned()
                        .flatten()
                        .and_then(|t| t.parse().ok())
                        .zip(row.get(1).cloned().flatten().as_deref().and_then(parse_lsn));
                    // Read up to ReadyForQuery.
                    loop {
                        let (tag, _) = read_message(&mut self.io)
                            .await
                            .map_err(|e| io_error(&self.what, e))?;
                        if tag == b'Z' {
                            break;
                        }
                    }
                    return Ok(Message::TimelineEnd(next));
                }
                b'Z' if self.ended => return Ok(Message::TimelineEnd(None)),
                b'E' => return Err(server_error(&self.what, &body)),
                _ => {}
            }
        }
    }
}

/// The writing half of a stream.
pub struct Sender {
    io: Box<dyn AsyncWrite + Unpin + Send>,
    what: String,
}

/// Microseconds since 2000-01-01, PostgreSQL's clock.
fn pg_now() -> i64 {
    const EPOCH_2000: u64 = 946_684_800;
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    (since.as_micros() as i64) - (EPOCH_2000 as i64) * 1_000_000
}

impl Sender {
    /// A standby status update: received up to `write`, durably kept up to `flush`.
    pub async fn status(&mut self, write: Lsn, flush: Lsn, reply: bool) -> Result<()> {
        tracing::trace!(write = %lsn_text(write), flush = %lsn_text(flush), "standby status");
        let mut payload = BytesMut::with_capacity(34);
        payload.put_u8(b'r');
        payload.put_u64(write);
        payload.put_u64(flush);
        payload.put_u64(0);
        payload.put_i64(pg_now());
        payload.put_u8(u8::from(reply));
        self.copy_data(&payload).await
    }

    async fn copy_data(&mut self, payload: &[u8]) -> Result<()> {
        let mut buf = BytesMut::with_capacity(payload.len() + 5);
        buf.put_u8(b'd');
        buf.put_u32(payload.len() as u32 + 4);
        buf.put_slice(payload);
        self.io
            .write_all(&buf)
            .await
            .map_err(|e| io_error(&self.what, e))?;
        self.io.flush().await.map_err(|e| io_error(&self.what, e))
    }

    /// Answers the server's end of a timeline (`CopyDone`).
    pub async fn done(&mut self) -> Result<()> {
        self.io
            .write_all(&[b'c', 0, 0, 0, 4])
            .await
            .map_err(|e| io_error(&self.what, e))?;
        self.io.flush().await.map_err(|e| io_error(&self.what, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_read_and_write_as_postgres_does() {
        assert_eq!(parse_lsn("16/B374D848"), Some(0x16_B374_D848));
        assert_eq!(lsn_text(0x16_B374_D848), "16/B374D848");
        assert_eq!(parse_lsn("0/0"), Some(0));
        assert_eq!(parse_lsn("nonsense"), None);
    }

    #[test]
    fn rows_and_errors_parse() {
        let mut body = BytesMut::new();
        body.put_i16(3);
        body.put_i32(4);
        body.put_slice(b"1234");
        body.put_i32(-1);
        body.put_i32(1);
        body.put_slice(b"2");
        assert_eq!(
            data_row(&body),
            vec![Some("1234".into()), None, Some("2".into())]
        );
        let error = b"SERROR\0C42710\0Mreplication slot \"lifeboat\" already exists\0\0";
        assert_eq!(
            error_fields(error),
            (
                "42710".into(),
                "replication slot \"lifeboat\" already exists".into()
            )
        );
    }
}
