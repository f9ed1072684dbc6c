//! SMTP delivery over connections convenor opens, and reuses, itself; lettre speaks SMTP on them.
//!
//! Why not lettre's `AsyncSmtpTransport` and its pool: lettre 0.11.23 (the newest release when
//! this was written) never sets `TCP_NODELAY`, and writes the end of DATA (`\r\n.\r\n`) as a
//! small write of its own after the body. Nagle's algorithm then holds that write until the
//! server's delayed ACK of the body arrives, about 40 ms, so every message waited ~40 ms for
//! nothing: 22 messages/s to a local smtp-sink, one at a time. Upstream fixed it in
//! lettre/lettre#1159 (merged, not released). Until a release has it, [`Relay`] opens the TCP
//! socket itself with `set_nodelay(true)` and hands it to lettre's
//! `AsyncSmtpConnection::connect_with_transport`. Everything else stays lettre's: the greeting
//! and EHLO, STARTTLS and implicit TLS with lettre's `TlsParameters` (the server's certificate
//! verified against the webpki roots plus the configured CA), AUTH, MAIL/RCPT/DATA and the dot
//! stuffing. Once a lettre release sets `TCP_NODELAY` itself, this module can go and
//! `Transport` can build an `AsyncSmtpTransport` with `PoolConfig::new().max_size(4)` again.
//!
//! Reuse (issue #4, pooled connections): after a successful send the connection is kept, up to
//! [`MAX_IDLE`] of them, so a burst does not handshake (TCP, TLS, EHLO, AUTH) per message. A
//! kept connection idle for [`CHECK_AFTER`] or longer is tested with NOOP before reuse (the
//! server may have closed it); one idle for [`IDLE_TIMEOUT`] is closed with QUIT by a reaper
//! task, as lettre's pool does. A connection that saw any error is never reused. When a kept
//! connection turns out closed by the server (no reply, or 421), the message is sent once more
//! on a new connection.
//!
//! Implicit TLS needs TLS before the server's greeting, but `connect_with_transport` reads the
//! greeting at once from the stream it is given. So the TLS stream is made first by lettre's own
//! (deprecated but public) `AsyncNetworkStream::upgrade_tls`, and `TlsStream` adapts it to the
//! tokio traits `connect_with_transport` takes.

use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError, Weak},
    task::{Context, Poll},
    time::{Duration, Instant},
};

#[allow(deprecated)] // See TlsStream: lettre's own TLS upgrade, for implicit TLS.
use lettre::transport::smtp::client::AsyncNetworkStream;
use lettre::{
    Address,
    address::Envelope,
    transport::smtp::{
        Error as SmtpError,
        authentication::{Credentials, DEFAULT_MECHANISMS},
        client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters},
        commands::{Data, Mail, Rcpt},
        extension::{ClientId, Extension, MailBodyParameter, MailParameter},
        response::Response,
    },
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
};

/// Connections kept open between sends (lettre's pool had `max_size(4)`).
pub const MAX_IDLE: usize = 4;
/// A kept connection idle this long is closed (lettre's pool default).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// A kept connection idle this long is tested with NOOP before it is reused; one used more
/// recently is reused at once (a burst pays no extra round trip per message).
pub const CHECK_AFTER: Duration = Duration::from_secs(1);
/// How long QUIT may take when a connection is closed.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

/// How the connection is secured.
#[derive(Clone)]
pub enum Security {
    /// No TLS (config validation allows it for a loopback relay only).
    Plaintext,
    /// Plain TCP, then STARTTLS, required.
    StartTls(TlsParameters),
    /// TLS from the first byte.
    Implicit(TlsParameters),
}

/// The step of opening a connection, before any message is offered (before MAIL FROM).
///
/// lettre's errors do not say at which command they happened (`Error::status()` gives the reply
/// code, `is_permanent()` whether it was 5xx), so `Relay::connect` tags each error with the
/// step it was taking when lettre returned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SetupStage {
    /// The TLS handshake of implicit TLS, before the greeting.
    Tls,
    /// The server's greeting and our EHLO (lettre's `connect_with_transport` does both).
    GreetingOrEhlo,
    /// STARTTLS, its handshake and the EHLO after it.
    StartTls,
    /// AUTH with the configured user and password.
    Auth,
}

impl fmt::Display for SetupStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Tls => "the TLS handshake",
            Self::GreetingOrEhlo => "the greeting or EHLO",
            Self::StartTls => "STARTTLS",
            Self::Auth => "AUTH (user and password)",
        })
    }
}

/// Why a send failed.
#[derive(Debug)]
pub enum Failure {
    /// No TCP connection could be made.
    Connect(io::Error),
    /// A connection was made but could not be set up for sending (greeting, EHLO, TLS,
    /// STARTTLS, AUTH): a fault of the relay or of our settings, not of the message.
    Setup {
        /// The step that failed.
        stage: SetupStage,
        /// lettre's error, with the server's reply when there was one.
        error: SmtpError,
    },
    /// lettre reported an error while sending the message on a set-up connection (MAIL FROM,
    /// RCPT TO, DATA, or NOOP/the connection on reuse): a reply code, a protocol fault, a
    /// dropped connection.
    Smtp(SmtpError),
    /// The server refused every recipient for good (5xx to each RCPT TO): nobody got it.
    Refused(Vec<(Address, SmtpError)>),
    /// No recipient was accepted and at least one was put off (4xx to its RCPT TO): nobody
    /// got it, and a later attempt may reach them.
    Deferred {
        /// The recipients put off (4xx), with the server's reply to each.
        deferred: Vec<(Address, SmtpError)>,
        /// The recipients refused for good (5xx) in the same transaction.
        refused: Vec<(Address, SmtpError)>,
    },
    /// The message needs an SMTP extension the relay does not offer (SMTPUTF8 for an address
    /// that is not ASCII, 8BITMIME for a body that is not): nothing was offered.
    Unsupported(&'static str),
}

/// A message the server has taken (it answered the end of DATA with 2xx).
#[derive(Debug)]
pub struct Accepted {
    /// The server's reply to the end of DATA.
    pub response: Response,
    /// The recipients the server took the message for (2xx to RCPT TO).
    pub accepted: Vec<Address>,
    /// The recipients the server refused for good (5xx to RCPT TO), with its reply to each:
    /// they did not get the message.
    pub refused: Vec<(Address, SmtpError)>,
    /// The recipients the server put off (4xx to RCPT TO, 421 aside), with its reply to each:
    /// they did not get the message, and a later attempt may reach them.
    pub deferred: Vec<(Address, SmtpError)>,
}

/// The most a connection attempt to one of the relay's addresses may take.
pub const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound on each connection attempt to one address of a relay whose sends are bounded by
/// `send_timeout`: a third of it, at most [`MAX_CONNECT_TIMEOUT`]. With the whole send's bound
/// on each attempt, an address that drops connection attempts without an answer (a firewalled
/// IPv6 route sorted first, a dead node of a round-robin name) used up the send's time, and the
/// next address was never tried.
pub fn connect_timeout(send_timeout: Duration) -> Duration {
    (send_timeout / 3).min(MAX_CONNECT_TIMEOUT)
}

/// One relay: where it is, how to talk to it, and the connections kept for reuse.
pub struct Relay {
    host: String,
    port: u16,
    /// Bound on each connection attempt to one address.
    connect_timeout: Duration,
    security: Security,
    credentials: Option<Credentials>,
    hello: ClientId,
    pool: Mutex<Pool>,
}

#[derive(Default)]
struct Pool {
    idle: Vec<Idle>,
    reaper: bool,
}

struct Idle {
    conn: AsyncSmtpConnection,
    since: Instant,
}

impl fmt::Debug for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Relay")
            .field("host", &self.host)
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Relay {
    /// A relay at `host:port` whose sends are bounded by `send_timeout` (each connection
    /// attempt to one of its addresses by [`connect_timeout`] of it); opens nothing yet.
    pub fn new(
        host: String,
        port: u16,
        send_timeout: Duration,
        security: Security,
        credentials: Option<Credentials>,
    ) -> Self {
        Self {
            host,
            port,
            connect_timeout: connect_timeout(send_timeout),
            security,
            credentials,
            // The host name, as lettre's transport sends it (looked up once, not per connection).
            hello: ClientId::default(),
            pool: Mutex::new(Pool::default()),
        }
    }

    fn pool(&self) -> MutexGuard<'_, Pool> {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sends one message on a kept connection or a new one (`transact`); keeps the
    /// connection afterwards if the send succeeded. Not bounded in time: the caller bounds it.
    pub async fn send(
        self: &Arc<Self>,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<Accepted, Failure> {
        if let Some(mut conn) = self.checkout().await {
            match transact(&mut conn, envelope, message).await {
                Ok(accepted) => {
                    self.checkin(conn);
                    return Ok(accepted);
                }
                // A kept connection the server has closed meanwhile (idle limit, messages per
                // connection, restart): once more on a new one. As with any retry, a connection
                // lost between our final "." and the server's 250 can deliver the message
                // twice, with the same Message-ID.
                Err(Failure::Smtp(e)) if gone(&e) => {}
                Err(failure) => return Err(failure),
            }
        }
        let mut conn = self.connect().await?;
        let accepted = transact(&mut conn, envelope, message).await?;
        self.checkin(conn);
        Ok(accepted)
    }

    /// Connections open now and kept for reuse.
    pub fn idle_connections(&self) -> usize {
        self.pool().idle.len()
    }

    async fn checkout(&self) -> Option<AsyncSmtpConnection> {
        loop {
            let Idle { mut conn, since } = self.pool().idle.pop()?;
            let idle = since.elapsed();
            if idle >= IDLE_TIMEOUT {
                quit(conn);
            } else if idle < CHECK_AFTER || conn.test_connected().await {
                return Some(conn);
            }
            // A connection that failed NOOP is dropped (closed); try the next one.
        }
    }

    fn checkin(self: &Arc<Self>, conn: AsyncSmtpConnection) {
        if conn.has_broken() {
            return;
        }
        let mut pool = self.pool();
        if pool.idle.len() >= MAX_IDLE {
            drop(pool);
            quit(conn);
            return;
        }
        pool.idle.push(Idle {
            conn,
            since: Instant::now(),
        });
        if !pool.reaper {
            pool.reaper = true;
            tokio::spawn(reap(Arc::downgrade(self)));
        }
    }

    /// A new connection, set up up to the point where a message can be offered. Every lettre
    /// error here is returned as [`Failure::Setup`] with the step it came from: the transport
    /// treats them all as transient, whatever the reply code.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Failure> {
        let at = |stage| move |error| Failure::Setup { stage, error };
        let tcp = self.tcp().await.map_err(Failure::Connect)?;
        let mut conn = match &self.security {
            Security::Implicit(tls) => {
                #[allow(deprecated)] // lettre's own TLS upgrade; see TlsStream.
                let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
                stream
                    .upgrade_tls(tls.clone())
                    .await
                    .map_err(at(SetupStage::Tls))?;
                AsyncSmtpConnection::connect_with_transport(
                    Box::new(TlsStream(stream)),
                    &self.hello,
                )
                .await
            }
            Security::Plaintext | Security::StartTls(_) => {
                AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello).await
            }
        }
        .map_err(at(SetupStage::GreetingOrEhlo))?;
        if let Security::StartTls(tls) = &self.security {
            conn.starttls(tls.clone(), &self.hello)
                .await
                .map_err(at(SetupStage::StartTls))?;
        }
        if let Some(credentials) = &self.credentials
            && let Err(error) = conn.auth(DEFAULT_MECHANISMS, credentials).await
        {
            // A refused AUTH leaves the connection open: say goodbye instead of dropping it.
            if !conn.has_broken() {
                quit(conn);
            }
            return Err(at(SetupStage::Auth)(error));
        }
        Ok(conn)
    }

    /// A TCP connection to the first address of the relay that answers, with `TCP_NODELAY`.
    async fn tcp(&self) -> io::Result<TcpStream> {
        let addrs = tokio::net::lookup_host((self.host.as_str(), self.port)).await?;
        connect_first(addrs, self.connect_timeout).await
    }
}

/// A connection to the first of `addrs` that answers within `per_address`, tried in order,
/// with `TCP_NODELAY`; the last error when none does.
pub async fn connect_first(
    addrs: impl IntoIterator<Item = std::net::SocketAddr>,
    per_address: Duration,
) -> io::Result<TcpStream> {
    let mut last = None;
    for addr in addrs {
        match tokio::time::timeout(per_address, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // The point of this module: see the module documentation.
                stream.set_nodelay(true)?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = Some(e),
            Err(_) => {
                last = Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connecting to {addr} timed out"),
                ))
            }
        }
    }
    Err(last
        .unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "the host name has no address")))
}

impl Drop for Relay {
    fn drop(&mut self) {
        // A replaced transport (config reload) says goodbye on its kept connections.
        let idle = std::mem::take(&mut self.pool().idle);
        if tokio::runtime::Handle::try_current().is_ok() {
            idle.into_iter().for_each(|i| quit(i.conn));
        }
    }
}

/// One mail transaction on a set-up connection: MAIL FROM, RCPT TO for each recipient, DATA
/// and the message. On any failure the connection is closed (QUIT), as lettre does.
///
/// Written here rather than taken from lettre's `AsyncSmtpConnection::send` (0.11.23), which
/// gives up at the first refused recipient: with a `list` of several addresses, one address
/// gone for good (550, a mailbox deleted) would fail the mail for every other list. Here a
/// recipient refused for good (5xx) is left out and reported in [`Accepted::refused`], and the
/// message goes to the others; only when every recipient is refused does the send fail
/// ([`Failure::Refused`]). A recipient put off (4xx: a full mailbox, greylisting, 452 "too many
/// recipients", and a 552, which older servers send for that) is left out the same way and reported in [`Accepted::deferred`], so the
/// caller can try it again later without doubling the message for the others (RFC 5321
/// 3.3: a client retries such recipients in a later transaction); when no recipient is
/// accepted, nobody got it ([`Failure::Deferred`]). A 421 (the server is closing the
/// connection) and any other fault end the transaction before DATA: nobody has the message
/// yet, so the retry that follows cannot double it. The
/// MAIL FROM parameters are lettre's: SMTPUTF8 when an address is not ASCII, 8BITMIME when the
/// message is not, each only when the server offers it.
async fn transact(
    conn: &mut AsyncSmtpConnection,
    envelope: &Envelope,
    message: &[u8],
) -> Result<Accepted, Failure> {
    let mut parameters = Vec::new();
    let not_ascii = |a: &Address| !AsRef::<str>::as_ref(a).is_ascii();
    if envelope.from().is_some_and(not_ascii) || envelope.to().iter().any(not_ascii) {
        if !conn.server_info().supports_feature(Extension::SmtpUtfEight) {
            conn.abort().await;
            return Err(Failure::Unsupported(
                "SMTPUTF8, which an address that is not ASCII needs",
            ));
        }
        parameters.push(MailParameter::SmtpUtfEight);
    }
    if !message.is_ascii() {
        if !conn.server_info().supports_feature(Extension::EightBitMime) {
            conn.abort().await;
            return Err(Failure::Unsupported(
                "8BITMIME, which a message that is not ASCII needs",
            ));
        }
        parameters.push(MailParameter::Body(MailBodyParameter::EightBitMime));
    }
    if let Err(e) = conn
        .command(Mail::new(envelope.from().cloned(), parameters))
        .await
    {
        conn.abort().await;
        return Err(Failure::Smtp(e));
    }
    let mut refused = Vec::new();
    let mut deferred = Vec::new();
    let mut accepted = Vec::new();
    for to in envelope.to() {
        match conn.command(Rcpt::new(to.clone(), Vec::new())).await {
            Ok(_) => accepted.push(to.clone()),
            Err(e) if too_many_recipients(&e) => deferred.push((to.clone(), e)),
            Err(e) if e.is_permanent() => refused.push((to.clone(), e)),
            Err(e) if e.is_transient() && !gone(&e) => deferred.push((to.clone(), e)),
            Err(e) => {
                conn.abort().await;
                return Err(Failure::Smtp(e));
            }
        }
    }
    if accepted.is_empty() {
        conn.abort().await;
        return Err(if deferred.is_empty() {
            Failure::Refused(refused)
        } else {
            Failure::Deferred { deferred, refused }
        });
    }
    let response = match conn.command(Data).await {
        Ok(_) => conn.message(message).await,
        Err(e) => Err(e),
    };
    match response {
        Ok(response) => Ok(Accepted {
            response,
            accepted,
            refused,
            deferred,
        }),
        Err(e) => {
            conn.abort().await;
            Err(Failure::Smtp(e))
        }
    }
}

/// Whether an error on a kept connection means the server no longer holds it: no reply at all
/// (closed, reset, garbled), or 421 (the server is closing the channel).
/// A 552 to RCPT TO: "too many recipients" from servers that follow RFC 821's mistake, which
/// RFC 5321 (4.5.3.1.10) says clients SHOULD take as the 452 it should have been: the recipient
/// is put off, not refused for good. (A 552 for a full mailbox is worth a retry too.)
fn too_many_recipients(e: &SmtpError) -> bool {
    e.status().is_some_and(|code| code.to_string() == "552")
}

fn gone(e: &SmtpError) -> bool {
    match e.status() {
        Some(code) => code.to_string() == "421",
        None => !e.is_client(),
    }
}

/// Closes a connection politely (QUIT), in the background.
fn quit(mut conn: AsyncSmtpConnection) {
    tokio::spawn(async move {
        let _ = tokio::time::timeout(QUIT_TIMEOUT, conn.quit()).await;
    });
}

/// Closes kept connections once idle for [`IDLE_TIMEOUT`]; ends when none is left, or with the
/// relay.
async fn reap(relay: Weak<Relay>) {
    loop {
        tokio::time::sleep(IDLE_TIMEOUT).await;
        let Some(relay) = relay.upgrade() else {
            return;
        };
        let mut pool = relay.pool();
        let (expired, kept): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut pool.idle)
            .into_iter()
            .partition(|i| i.since.elapsed() >= IDLE_TIMEOUT);
        pool.idle = kept;
        let done = pool.idle.is_empty();
        if done {
            pool.reaper = false;
        }
        drop(pool);
        expired.into_iter().for_each(|i| quit(i.conn));
        if done {
            return;
        }
    }
}

/// lettre's TLS stream (made by `AsyncNetworkStream::upgrade_tls`, which speaks the `futures`
/// I/O traits) seen through the tokio traits that `connect_with_transport` takes. Only for
/// implicit TLS; goes with this module.
#[allow(deprecated)]
#[derive(Debug)]
struct TlsStream(AsyncNetworkStream);

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let unfilled = buf.initialize_unfilled();
        match futures_io::AsyncRead::poll_read(Pin::new(&mut self.0), cx, unfilled) {
            Poll::Ready(Ok(n)) => {
                buf.advance(n);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures_io::AsyncWrite::poll_write(Pin::new(&mut self.0), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_flush(Pin::new(&mut self.0), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        futures_io::AsyncWrite::poll_close(Pin::new(&mut self.0), cx)
    }
}

impl AsyncTokioStream for TlsStream {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_address_gets_a_third_of_the_send_at_most_ten_seconds() {
        let s = Duration::from_secs;
        for (send, each) in [
            (s(30), s(10)),
            (s(300), s(10)),
            (s(9), s(3)),
            (Duration::from_millis(300), Duration::from_millis(100)),
        ] {
            assert_eq!(connect_timeout(send), each, "{send:?}");
            assert!(
                connect_timeout(send) * 2 < send,
                "{send:?}: two addresses fit"
            );
        }
        let relay = Relay::new("relay".into(), 25, s(30), Security::Plaintext, None);
        assert_eq!(
            relay.connect_timeout,
            s(10),
            "a relay's attempts use the rule"
        );
    }

    /// An address that drops connection attempts (a listener whose accept queue is full: the
    /// kernel drops the SYN, and the client waits) is given up at its bound, and the next one
    /// is tried.
    #[tokio::test]
    async fn an_address_that_never_answers_is_left_for_the_next() {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind("127.0.0.1:0".parse().expect("addr"))
            .expect("bind");
        // Backlog 0: one connection fills the accept queue, and it is never accepted.
        let full = socket.listen(0).expect("listen");
        let dead = full.local_addr().expect("addr");
        let _filler = TcpStream::connect(dead).await.expect("the one queued");
        let good = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let good_addr = good.local_addr().expect("addr");
        let connected = tokio::time::timeout(
            Duration::from_secs(60),
            connect_first([dead, good_addr], Duration::from_millis(200)),
        )
        .await
        .expect("the next address was tried within a minute");
        let stream = connected.expect("connected to the next address");
        assert_eq!(stream.peer_addr().expect("peer"), good_addr);
        assert!(stream.nodelay().expect("nodelay"));
        // The dead address alone times out with TimedOut.
        let alone = connect_first([dead], Duration::from_millis(200))
            .await
            .expect_err("no answer");
        assert_eq!(alone.kind(), io::ErrorKind::TimedOut, "{alone}");
    }
}
