//! Big feed bodies sent with `sendfile(2)` from a sealed memfd, as nginx sends files.
//!
//! Why: a body written with `writev` from our heap is copied by the kernel into fresh socket
//! buffer pages on every response, and a client on another CPU then reads cache lines that are
//! dirty in the server's cache. `sendfile` from a memfd hands the socket references to the same
//! page-cache pages every time: no copy on the server, clean lines for the client. On the 517 KB
//! feed at 256 connections this is the difference between 0.7x and ~1x nginx (BENCHMARKS.md).
//!
//! How:
//! - [`seal`] writes a rendered body into a memfd, seals it against any change
//!   (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL`), maps it read-only, and returns
//!   a [`Bytes`] that points into the mapping. The mapping is recorded in a process-wide
//!   registry (base address, length, memfd) until the last `Bytes` handle to it is dropped.
//! - [`SendfileStream`] wraps each accepted [`TcpStream`]. When hyper writes a buffer that lies
//!   inside a registered mapping, it is sent with `sendfile(socket, memfd, offset, len)`; any
//!   other buffer goes out with the usual `writev`. Headers followed by a mapped body in the same
//!   write are sent with `MSG_MORE` first, so they leave in the same segment as the body's start
//!   (what nginx does with `TCP_CORK`); headers alone (HEAD, 304) are never corked.
//! - Every write through a [`SendfileStream`] (either path, flush and shutdown too) that waits
//!   on a full socket arms a deadline; a write that takes all it is offered, or writes that
//!   together take [`MIN_PROGRESS`] bytes, disarm it. A write still waiting at the deadline
//!   fails with `TimedOut`, so hyper drops the connection of a client that reads nothing, or
//!   next to nothing (a few bytes now and then would otherwise hold a slot for days on a big
//!   feed), and its slot frees (the server passes `[http] request_timeout`). No crate in the
//!   tree does this (hyper and hyper-util have no write timeout); it is a few lines here.
//!
//! Where memfd or mmap is refused (a seccomp filter, no memory), [`seal`] logs one warning and
//! returns the bytes on the heap: the feed is always served. [`sendfile_bytes`] counts what went
//! out through `sendfile` and [`sealed_bodies`] the live mappings (the metrics
//! `convenor_feed_sendfile_bytes_total` and `convenor_feed_sealed_bodies`).

use std::{
    fs::File,
    future::Future as _,
    io::{self, IoSlice, Write as _},
    os::fd::{AsFd as _, OwnedFd},
    pin::Pin,
    sync::{
        Arc, PoisonError, RwLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    task::{Context, Poll, ready},
    time::Duration,
};

use bytes::Bytes;
use rustix::{
    fs::{MemfdFlags, SealFlags},
    net::{SendAncillaryBuffer, SendFlags},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, Interest, ReadBuf},
    net::TcpStream,
    time::{Instant, Sleep},
};

/// Bodies of at least this many bytes are sealed into a memfd by the feed state. Below it one
/// `writev` of headers and body is as cheap (the shipped 7 KB feed measured no better with
/// `sendfile`; BENCHMARKS.md).
pub const SEAL_MIN_BYTES: usize = 64 * 1024;

/// The least a client reading a response must take within each stall timeout while the socket
/// is full: 16 KiB, about 550 bytes a second under the default 30 s `request_timeout` (a 517 KB
/// feed then takes at most 16 minutes, where a client reading a byte now and then held its
/// slot for days).
pub const MIN_PROGRESS: usize = 16 * 1024;

/// Bytes sent with `sendfile` since start.
static SENDFILE_BYTES: AtomicU64 = AtomicU64::new(0);

/// A stall deadline that never comes (about 30 years), for a timeout past the clock's range.
const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// Whether the fallback warning was logged (once per process).
static WARNED: AtomicBool = AtomicBool::new(false);

/// The live mappings. A handful at most (a few feeds, old and new during a reload), so a lookup
/// is a read lock and a scan, with no allocation.
static REGISTRY: RwLock<Vec<Entry>> = RwLock::new(Vec::new());

/// One live mapping in [`REGISTRY`].
struct Entry {
    base: usize,
    len: usize,
    fd: Arc<OwnedFd>,
}

/// The owner behind a sealed [`Bytes`]: the read-only mapping of a sealed memfd.
struct Sealed {
    map: memmap2::Mmap,
}

impl AsRef<[u8]> for Sealed {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Sealed {
    fn drop(&mut self) {
        // Out of the registry before the mapping goes (the fields drop after this body): an
        // address found in the registry is always mapped by the entry's memfd.
        let base = self.map.as_ptr() as usize;
        REGISTRY
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|e| e.base != base);
    }
}

/// Returns `body` as [`Bytes`] backed by a sealed, read-only memfd mapping that
/// [`SendfileStream`] sends with `sendfile`; or, when that cannot be set up (or `body` is
/// empty), the same bytes on the heap, after one warning per process.
pub fn seal(body: impl Into<Bytes>) -> Bytes {
    let body: Bytes = body.into();
    if body.is_empty() {
        return Bytes::new();
    }
    match map_sealed(&body) {
        Ok(bytes) => bytes,
        Err(e) => {
            warn_heap(&e);
            body
        }
    }
}

/// [`seal`] for a body given as pieces (`len` bytes in all), written into the memfd without
/// first being joined on the heap (at 5,000 meetings a start joined 21 MB of VEVENTs into six
/// feeds only to copy them again), with the body's BLAKE3, computed on the way (through a
/// staging buffer, hashed as it fills). `None` where memfd or mmap is refused (after the same
/// one warning as [`seal`]): the caller then joins the pieces on the heap.
pub fn seal_pieces<'a>(
    pieces: impl Iterator<Item = &'a [u8]>,
    len: usize,
) -> Option<(Bytes, blake3::Hash)> {
    if len == 0 {
        return Some((Bytes::new(), blake3::hash(&[])));
    }
    let sealed = new_memfd().and_then(|mut file| {
        let hash = write_and_hash(&mut file, pieces)?;
        Ok((seal_and_map(file, len)?, hash))
    });
    match sealed {
        Ok(sealed) => Some(sealed),
        Err(e) => {
            warn_heap(&e);
            None
        }
    }
}

/// The staging buffer of [`write_and_hash`]: 128 KiB, which stays in a core's L2 cache while it
/// is written and hashed.
const STAGING: usize = 128 * 1024;

/// Writes every piece to `file` through a staging buffer, one `write` per [`STAGING`] bytes,
/// and returns the BLAKE3 of all of them. Each buffer is hashed while the copy into it has
/// just brought it into the cache, in one long slice (BLAKE3's SIMD hashes 16 KiB at once, and
/// runs several times slower fed 1 KiB event by event); hashing the sealed mapping afterwards
/// instead took page faults over all of it (fault-around maps 16 pages a fault) and read every
/// byte from memory again.
fn write_and_hash<'a>(
    file: &mut File,
    pieces: impl Iterator<Item = &'a [u8]>,
) -> io::Result<blake3::Hash> {
    let mut hasher = blake3::Hasher::new();
    let mut staged: Vec<u8> = Vec::with_capacity(STAGING);
    let mut flush = |staged: &mut Vec<u8>| -> io::Result<()> {
        hasher.update(staged);
        file.write_all(staged)?;
        staged.clear();
        Ok(())
    };
    for mut piece in pieces {
        while !piece.is_empty() {
            let room = STAGING - staged.len();
            let (now, rest) = piece.split_at(piece.len().min(room));
            staged.extend_from_slice(now);
            piece = rest;
            if staged.len() == STAGING {
                flush(&mut staged)?;
            }
        }
    }
    flush(&mut staged)?;
    Ok(hasher.finalize())
}

fn warn_heap(e: &io::Error) {
    if !WARNED.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "cannot put a feed into a sealed memfd ({e}); serving feeds from the heap with \
             writev instead of sendfile"
        );
    }
}

fn map_sealed(body: &[u8]) -> io::Result<Bytes> {
    let mut file = new_memfd()?;
    file.write_all(body)?;
    seal_and_map(file, body.len())
}

/// `len` bytes of `file` from `offset`, copied by the kernel (`sendfile` into a memfd: no pass
/// through our memory) into a sealed memfd mapping as [`seal`] makes them. For the feed cache,
/// whose bodies go from its file to the socket without being read into the heap first. On any
/// failure (short file, a refused syscall) the error is returned and nothing is registered.
pub fn seal_from_file(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    let memfd = new_memfd()?;
    let mut at = offset;
    let mut copied = 0;
    while copied < len {
        let n = rustix::fs::sendfile(&memfd, file, Some(&mut at), len - copied)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the file ended before the body",
            ));
        }
        copied += n;
    }
    seal_and_map(memfd, len)
}

fn new_memfd() -> io::Result<File> {
    let fd = rustix::fs::memfd_create(
        "convenor-feed",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    Ok(File::from(fd))
}

/// Seals `file` (holding exactly `len` bytes), maps it read-only and registers the mapping.
fn seal_and_map(file: File, len: usize) -> io::Result<Bytes> {
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    // SAFETY: mapping a file is unsound only if the file can change while mapped. This memfd is
    // sealed against shrinking, growing and writing, and the seals themselves are sealed: no
    // process (not even one holding the fd) can change its bytes or its length from now on, so
    // the read-only mapping stays valid, immutable memory for its whole life.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(&file)? };
    if map.len() != len || file.metadata()?.len() != len as u64 {
        return Err(io::Error::other("the mapping has the wrong length"));
    }
    let entry = Entry {
        base: map.as_ptr() as usize,
        len: map.len(),
        fd: Arc::new(OwnedFd::from(file)),
    };
    REGISTRY
        .write()
        .unwrap_or_else(PoisonError::into_inner)
        .push(entry);
    Ok(Bytes::from_owner(Sealed { map }))
}

/// True when `bytes` lies wholly inside a sealed mapping (so [`seal`] would only copy it).
pub fn is_sealed(bytes: &[u8]) -> bool {
    find_mapped(&[IoSlice::new(bytes)]).is_some()
}

/// The memfd and offset of `buf` when it lies wholly inside a registered mapping.
#[cfg(test)]
fn lookup(buf: &[u8]) -> Option<(Arc<OwnedFd>, u64)> {
    find_mapped(&[IoSlice::new(buf)]).map(|(_, fd, offset)| (fd, offset))
}

/// The first non-empty buffer of `bufs` that lies wholly inside a registered mapping: its
/// index, the mapping's memfd and the buffer's offset in it. One read lock for all of them.
fn find_mapped(bufs: &[IoSlice<'_>]) -> Option<(usize, Arc<OwnedFd>, u64)> {
    let registry = REGISTRY.read().unwrap_or_else(PoisonError::into_inner);
    if registry.is_empty() {
        return None;
    }
    bufs.iter().enumerate().find_map(|(i, buf)| {
        let start = buf.as_ptr() as usize;
        let end = start.checked_add(buf.len())?;
        let e = registry
            .iter()
            .find(|e| !buf.is_empty() && start >= e.base && end <= e.base + e.len)?;
        // The caller borrows `buf`, so the mapping it lies in (this entry's: entries leave the
        // registry before their mapping is unmapped) stays alive at least as long as the borrow.
        Some((i, Arc::clone(&e.fd), (start - e.base) as u64))
    })
}

/// Bytes sent with `sendfile` by every [`SendfileStream`] since the process started.
pub fn sendfile_bytes() -> u64 {
    SENDFILE_BYTES.load(Ordering::Relaxed)
}

/// Feed bodies now held in sealed memfd mappings (0 with big feeds means the heap fallback).
pub fn sealed_bodies() -> usize {
    REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .len()
}

/// A [`TcpStream`] whose vectored writes send buffers from [`seal`]ed bodies with `sendfile`,
/// and whose writes fail with [`io::ErrorKind::TimedOut`] once they have made no progress for
/// its stall timeout (a client that stops reading its responses). Reads are the stream's own.
#[derive(Debug)]
pub struct SendfileStream {
    inner: TcpStream,
    /// How long a write, flush or shutdown may wait on a full socket without progress.
    stall_timeout: Duration,
    /// The deadline of the wait in progress, made at the first wait and reset for each later
    /// one (boxed, as `Sleep` is `!Unpin`).
    stall_deadline: Option<Pin<Box<Sleep>>>,
    /// Whether `stall_deadline` is set for the wait in progress.
    stall: StallRule,
}

/// When a connection's writes arm and disarm their stall deadline, apart from the clock: a
/// write that must wait arms it (unless it is armed); a ready outcome disarms it, but for a
/// write that took only part of what it was offered while it was armed, which counts towards
/// [`MIN_PROGRESS`] and disarms it once the writes since it was armed reach that.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct StallRule {
    /// Whether the deadline is set for the wait in progress.
    armed: bool,
    /// What writes took while it was armed, short of all they were offered.
    progress: usize,
}

impl StallRule {
    /// A write, flush or shutdown came back ready; `partial` is what a write took when that was
    /// less than it was offered.
    fn ready(&mut self, partial: Option<usize>) {
        match partial {
            Some(n) if self.armed && self.progress.saturating_add(n) < MIN_PROGRESS => {
                self.progress += n;
            }
            _ => *self = Self::default(),
        }
    }

    /// A write must wait: true when that arms the deadline (a new one is to be set).
    fn waiting(&mut self) -> bool {
        !std::mem::replace(&mut self.armed, true)
    }

    /// The deadline passed with a write waiting: disarms, returning what the writes took.
    fn expired(&mut self) -> usize {
        std::mem::take(self).progress
    }
}

impl SendfileStream {
    /// Wraps an accepted connection whose writes may wait at most `stall_timeout` on a full
    /// socket without progress.
    pub fn new(inner: TcpStream, stall_timeout: Duration) -> Self {
        Self {
            inner,
            stall_timeout,
            stall_deadline: None,
            stall: StallRule::default(),
        }
    }

    /// Passes on a write attempt's outcome, watching the time it waits: a pending attempt
    /// arms the stall deadline (unless one is armed already), a ready outcome disarms it, and
    /// a pending attempt past the deadline becomes [`io::ErrorKind::TimedOut`], which ends the
    /// connection and frees its slot. A write that took only `partial` bytes of what it was
    /// offered counts towards [`MIN_PROGRESS`] instead, and disarms the deadline once the
    /// writes since it was armed reach it.
    fn watch_stall<T>(
        &mut self,
        cx: &mut Context<'_>,
        partial: Option<usize>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stall.ready(partial);
            return polled;
        }
        if self.stall.waiting() {
            let now = Instant::now();
            // A timeout too long for the clock (from a config that asks for it) never fires.
            let deadline = now
                .checked_add(self.stall_timeout)
                .unwrap_or_else(|| now + FAR_FUTURE);
            match self.stall_deadline.as_mut() {
                Some(stall) => stall.as_mut().reset(deadline),
                None => self.stall_deadline = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let Some(stall) = self.stall_deadline.as_mut() else {
            return polled;
        };
        match stall.as_mut().poll(cx) {
            Poll::Ready(()) => {
                let read = self.stall.expired();
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "the client read {read} bytes of the response in {:?} (at least {MIN_PROGRESS} wanted)",
                        self.stall_timeout
                    ),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// One attempt at a write, the socket being reported writable: the `plain` buffers (none
    /// of them mapped) with `MSG_MORE`, then `body`, which lies at `offset` in the memfd `fd`,
    /// with `sendfile`. Returns what was written, even when the second step fails.
    fn write_once(
        &self,
        plain: &[IoSlice<'_>],
        body: &[u8],
        fd: &OwnedFd,
        mut offset: u64,
    ) -> io::Result<usize> {
        let socket = self.inner.as_fd();
        let mut sent = 0;
        if !plain.is_empty() {
            let wanted: usize = plain.iter().map(|b| b.len()).sum();
            // Corked because the body follows in this very call, which sends it (sendfile's
            // last piece goes out without MORE, pushing the segment).
            let flags = SendFlags::MORE | SendFlags::NOSIGNAL;
            sent = rustix::net::sendmsg(socket, plain, &mut SendAncillaryBuffer::default(), flags)?;
            if sent < wanted {
                return Ok(sent);
            }
        }
        match rustix::fs::sendfile(socket, fd, Some(&mut offset), body.len()) {
            Ok(n) => {
                SENDFILE_BYTES.fetch_add(n as u64, Ordering::Relaxed);
                Ok(sent + n)
            }
            // What was already written counts; the error comes back on the next call.
            Err(_) if sent > 0 => Ok(sent),
            Err(e) => Err(e.into()),
        }
    }
    /// One vectored write: the leading run of buffers outside any mapping with `writev`, or
    /// that run corked and the mapped buffer after it with `sendfile` ([`Self::write_once`]).
    fn poll_send(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<io::Result<usize>> {
        let first = bufs
            .iter()
            .position(|b| !b.is_empty())
            .unwrap_or(bufs.len());
        let bufs = &bufs[first..];
        // The leading run of buffers outside any mapping, and the mapped one after it.
        let Some((plain, fd, offset)) = find_mapped(bufs) else {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        };
        let body: &[u8] = &bufs[plain];
        loop {
            ready!(self.inner.poll_write_ready(cx))?;
            let attempt = self.inner.try_io(Interest::WRITABLE, || {
                self.write_once(&bufs[..plain], body, &fd, offset)
            });
            match attempt {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncRead for SendfileStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for SendfileStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let offered: usize = bufs.iter().map(|b| b.len()).sum();
        let polled = this.poll_send(cx, bufs);
        let partial = match polled {
            Poll::Ready(Ok(n)) if n < offered => Some(n),
            _ => None,
        };
        this.watch_stall(cx, partial, polled)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch_stall(cx, None, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.watch_stall(cx, None, polled)
    }
}

#[cfg(test)]
mod tests {
    use std::{future::poll_fn, time::Duration};

    use tokio::{
        io::AsyncReadExt as _,
        net::{TcpListener, TcpSocket},
    };

    use super::*;

    /// A body that differs at every offset (so a wrong offset shows).
    fn pattern(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
            .collect()
    }

    #[test]
    fn pieces_are_sealed_and_hashed_as_the_body_they_make_across_staging_buffers() {
        let body = pattern(300_000);
        // 2,999 pieces of 1 to 199 bytes (two staging buffers and part of a third, a piece
        // split at each buffer's end), and the rest in one.
        let mut pieces = Vec::new();
        let mut at = 0;
        for i in 0..2999 {
            let n = 1 + (i * 37) % 199;
            pieces.push(&body[at..at + n]);
            at += n;
        }
        pieces.push(&body[at..]);
        let (sealed, hash) = seal_pieces(pieces.iter().copied(), body.len()).expect("memfd");
        assert_eq!(&sealed[..], &body[..]);
        assert_eq!(hash, blake3::hash(&body));
        assert!(is_sealed(&sealed));
        let (empty, hash) = seal_pieces(std::iter::empty(), 0).expect("empty");
        assert_eq!((empty, hash), (Bytes::new(), blake3::hash(b"")));
    }

    /// A connected loopback pair: (the wrapped sender with a small send buffer and the given
    /// stall timeout, the receiver).
    async fn pair_stalling_after(stall_timeout: Duration) -> (SendfileStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let socket = TcpSocket::new_v4().expect("socket");
        socket.set_send_buffer_size(16 * 1024).expect("sndbuf");
        let (connected, accepted) = tokio::join!(
            socket.connect(listener.local_addr().expect("addr")),
            listener.accept()
        );
        let receiver = accepted.expect("accept").0;
        // A small receive buffer too, so a slow reader holds the sender back.
        rustix::net::sockopt::set_socket_recv_buffer_size(&receiver, 16 * 1024).expect("rcvbuf");
        (
            SendfileStream::new(connected.expect("connect"), stall_timeout),
            receiver,
        )
    }

    /// [`pair_stalling_after`] with the default request timeout.
    async fn pair() -> (SendfileStream, TcpStream) {
        pair_stalling_after(Duration::from_secs(30)).await
    }

    /// Writes `chunks` through the wrapper the way hyper does: vectored writes of what is left,
    /// advancing by what each write took. Returns how often a write had to wait.
    async fn send_all(stream: &mut SendfileStream, chunks: &[Bytes]) -> usize {
        try_send_all(stream, chunks).await.expect("write")
    }

    /// [`send_all`], returning the first failed write's error.
    async fn try_send_all(stream: &mut SendfileStream, chunks: &[Bytes]) -> io::Result<usize> {
        let mut chunks: Vec<Bytes> = chunks.to_vec();
        let mut waits = 0;
        while chunks.iter().any(|c| !c.is_empty()) {
            let n = poll_fn(|cx| {
                let slices: Vec<IoSlice<'_>> = chunks.iter().map(|c| IoSlice::new(c)).collect();
                let polled = Pin::new(&mut *stream).poll_write_vectored(cx, &slices);
                if polled.is_pending() {
                    waits += 1;
                }
                polled
            })
            .await?;
            assert!(n > 0, "a write took nothing");
            let mut left = n;
            for c in &mut chunks {
                let take = left.min(c.len());
                let _ = c.split_to(take);
                left -= take;
            }
        }
        Ok(waits)
    }

    /// The most [`read_pausing`] reads at once.
    const READ_PIECE: usize = 64 * 1024;

    /// Reads `len` bytes, pausing `pause` after each read (a client that reads slowly but
    /// steadily).
    async fn read_pausing(mut stream: TcpStream, len: usize, pause: Duration) -> Vec<u8> {
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; READ_PIECE];
        while got.len() < len {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed after {} of {len} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            tokio::time::sleep(pause).await;
        }
        got
    }

    /// Reads `len` bytes in small pieces with pauses.
    async fn read_slowly(mut stream: TcpStream, len: usize) -> Vec<u8> {
        let mut got = Vec::with_capacity(len);
        let mut buf = vec![0u8; 64 * 1024];
        let mut reads = 0u32;
        while got.len() < len {
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "closed after {} of {len} bytes", got.len());
            got.extend_from_slice(&buf[..n]);
            reads += 1;
            if reads.is_multiple_of(8) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        got
    }

    #[test]
    fn a_sealed_body_holds_the_input_and_is_registered() {
        let input = pattern(200_000);
        let body = seal(input.clone());
        assert_eq!(body.as_ref(), input.as_slice());
        assert!(lookup(&body).is_some(), "not registered");
        assert_eq!(lookup(&body[1000..2000]).expect("registered").1, 1000);
        assert!(lookup(&input).is_none(), "heap bytes are not mapped");
        assert!(seal(Vec::new()).is_empty());
    }

    #[test]
    fn the_seals_refuse_any_change() {
        let body = seal(pattern(100_000));
        let (fd, _) = lookup(&body).expect("registered");
        let err = |r: rustix::io::Result<()>| r.expect_err("a sealed memfd changed");
        assert_eq!(
            rustix::io::write(&*fd, b"x").expect_err("write"),
            rustix::io::Errno::PERM
        );
        assert_eq!(
            rustix::io::pwrite(&*fd, b"x", 0).expect_err("pwrite"),
            rustix::io::Errno::PERM
        );
        assert_eq!(
            err(rustix::fs::ftruncate(&*fd, 10)),
            rustix::io::Errno::PERM
        );
        assert_eq!(
            err(rustix::fs::ftruncate(&*fd, 200_000)),
            rustix::io::Errno::PERM
        );
        assert_eq!(
            err(rustix::fs::fcntl_add_seals(&*fd, SealFlags::FUTURE_WRITE)),
            rustix::io::Errno::PERM
        );
        assert!(
            rustix::fs::fcntl_get_seals(&*fd)
                .expect("seals")
                .contains(SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL)
        );
        // A writable shared mapping is refused too (F_SEAL_WRITE).
        let file = File::from(fd.try_clone().expect("dup"));
        // SAFETY: the mapping is expected to fail; if it did not, it is dropped unused.
        let writable = unsafe { memmap2::MmapOptions::new().map_mut(&file) };
        assert!(writable.is_err(), "a writable mapping of a sealed memfd");
    }

    #[test]
    fn the_registry_entry_goes_with_the_last_handle() {
        let body = seal(pattern(70_000));
        let copy = body.slice(10..20);
        let (ptr, len) = (body.as_ptr() as usize, body.len());
        let registered = |ptr: usize| {
            REGISTRY
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .any(|e| e.base == ptr && e.len == len)
        };
        drop(body);
        assert!(registered(ptr), "a slice still holds the mapping");
        drop(copy);
        assert!(!registered(ptr), "entry left after the last handle");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_big_body_goes_out_whole_through_sendfile_to_a_slow_reader() {
        let input = pattern(6 * 1024 * 1024 + 123);
        let body = seal(input.clone());
        let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-length: 6291579\r\n\r\n");
        let before = sendfile_bytes();
        let (mut tx, rx) = pair().await;
        let reader = tokio::spawn(read_slowly(rx, head.len() + input.len()));
        let waits = send_all(&mut tx, &[head.clone(), body]).await;
        let got = reader.await.expect("reader");
        assert_eq!(&got[..head.len()], &head[..]);
        assert!(got[head.len()..] == input[..], "the body differs");
        assert!(
            waits > 0,
            "the writer never had to wait: no EAGAIN exercised"
        );
        assert!(sendfile_bytes() - before >= input.len() as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slice_from_the_middle_sends_its_own_bytes() {
        let input = pattern(300_000);
        let body = seal(input.clone());
        let middle = body.slice(123_457..200_001);
        let before = sendfile_bytes();
        let (mut tx, rx) = pair().await;
        let reader = tokio::spawn(read_slowly(rx, middle.len() + 5));
        send_all(&mut tx, &[Bytes::from_static(b"head:"), middle]).await;
        let got = reader.await.expect("reader");
        assert_eq!(&got[..5], b"head:");
        assert!(got[5..] == input[123_457..200_001], "wrong bytes");
        assert!(sendfile_bytes() - before >= (200_001 - 123_457) as u64);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_to_a_client_that_reads_nothing_times_out_on_either_path() {
        let input = pattern(4 * 1024 * 1024);
        for (path, body) in [
            ("sendfile", seal(input.clone())),
            ("writev", Bytes::from(input)),
        ] {
            let (mut tx, _never_read) = pair_stalling_after(Duration::from_millis(200)).await;
            let head = Bytes::from_static(b"HTTP/1.1 200 OK\r\n\r\n");
            let sent = tokio::time::timeout(
                Duration::from_secs(30),
                try_send_all(&mut tx, &[head, body]),
            )
            .await;
            let err = sent
                .unwrap_or_else(|_| panic!("{path}: the write still waits after 30 s"))
                .expect_err("4 MiB went to a client that read nothing");
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{path}: {err}");
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_client_that_keeps_reading_is_never_timed_out_however_long_the_body_takes() {
        let input = pattern(3 * 1024 * 1024);
        let (stall, pause) = (Duration::from_secs(1), Duration::from_millis(50));
        // The reader sleeps `pause` after each read of at most READ_PIECE bytes, so the whole
        // send takes at least this long, by its sleeps alone: longer than the stall timeout, so
        // a deadline that progress did not push back would fire. Each pause is a twentieth of
        // the timeout, a margin for a busy machine.
        let at_least = pause * u32::try_from(input.len() / READ_PIECE).expect("reads");
        assert!(at_least > stall * 2, "{at_least:?}");
        for body in [seal(input.clone()), Bytes::from(input.clone())] {
            let (mut tx, rx) = pair_stalling_after(stall).await;
            let reader = tokio::spawn(read_pausing(rx, input.len(), pause));
            let waits = send_all(&mut tx, &[body]).await;
            let got = reader.await.expect("reader");
            assert!(got == input, "the body differs");
            assert!(waits > 0);
        }
    }

    /// The stall rule over sequences of write outcomes: `W` a write that waits, `F` one that
    /// took all it was offered, `P(n)` one that took only `n` bytes.
    #[test]
    fn only_enough_progress_disarms_the_stall_deadline() {
        #[derive(Clone, Copy, Debug)]
        enum Event {
            W,
            F,
            P(usize),
        }
        use Event::{F, P, W};
        let k = 1024;
        let table: &[(&str, &[Event], bool)] = &[
            ("a write that waits arms it", &[W], true),
            ("one that took all disarms it", &[W, F], false),
            (
                "a trickle keeps it armed",
                &[W, P(100), W, P(100), W, P(100)],
                true,
            ),
            (
                "just short of the minimum",
                &[W, P(8 * k), W, P(8 * k - 1)],
                true,
            ),
            (
                "the minimum, in two writes",
                &[W, P(8 * k), W, P(8 * k)],
                false,
            ),
            ("the minimum, in one", &[W, P(16 * k)], false),
            (
                "a partial write before any wait arms nothing",
                &[P(100)],
                false,
            ),
            ("nor counts", &[P(10 * k), W, P(8 * k)], true),
            (
                "progress is counted afresh",
                &[W, P(16 * k), W, P(8 * k)],
                true,
            ),
            (
                "a full write resets the count",
                &[W, P(12 * k), F, W, P(8 * k)],
                true,
            ),
        ];
        for (name, events, armed) in table {
            let mut rule = StallRule::default();
            let mut arms = 0;
            for event in *events {
                match *event {
                    W => arms += usize::from(rule.waiting()),
                    F => rule.ready(None),
                    P(n) => rule.ready(Some(n)),
                }
            }
            assert_eq!(rule.armed, *armed, "{name}: {events:?}");
            let waits = events.iter().filter(|e| matches!(e, W)).count();
            assert!(arms >= 1 || waits == 0, "{name}: a wait armed nothing");
        }
        // A deadline that passed disarms, and says what the writes took meanwhile.
        let mut rule = StallRule::default();
        rule.waiting();
        rule.ready(Some(300));
        assert_eq!(rule.expired(), 300);
        assert_eq!(rule, StallRule::default());
    }

    /// Reads a few bytes at a time with pauses until the sender gives up (a client that reads
    /// next to nothing, for ever).
    async fn read_trickling(mut stream: TcpStream, pause: Duration) {
        let mut buf = [0u8; 64];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_to_a_client_that_reads_next_to_nothing_times_out_on_either_path() {
        let input = pattern(4 * 1024 * 1024);
        for (path, body) in [
            ("sendfile", seal(input.clone())),
            ("writev", Bytes::from(input)),
        ] {
            let (mut tx, rx) = pair_stalling_after(Duration::from_millis(500)).await;
            let reader = tokio::spawn(read_trickling(rx, Duration::from_millis(20)));
            let sent =
                tokio::time::timeout(Duration::from_secs(60), try_send_all(&mut tx, &[body])).await;
            let err = sent
                .unwrap_or_else(|_| panic!("{path}: the write still goes on after 60 s"))
                .expect_err("4 MiB went to a client that reads 64 bytes at a time");
            assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{path}: {err}");
            reader.abort();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn heap_buffers_go_out_with_writev() {
        let input = pattern(2 * 1024 * 1024);
        let heap = Bytes::from(input.clone());
        assert!(lookup(&heap).is_none());
        let (mut tx, rx) = pair().await;
        let reader = tokio::spawn(read_slowly(rx, input.len() + 3));
        let waits = send_all(&mut tx, &[Bytes::from_static(b"abc"), heap]).await;
        let got = reader.await.expect("reader");
        assert_eq!(&got[..3], b"abc");
        assert!(got[3..] == input[..]);
        assert!(waits > 0);
        // Shutdown and flush are the stream's own.
        poll_fn(|cx| Pin::new(&mut tx).poll_flush(cx))
            .await
            .expect("flush");
        poll_fn(|cx| Pin::new(&mut tx).poll_shutdown(cx))
            .await
            .expect("shutdown");
    }
}
