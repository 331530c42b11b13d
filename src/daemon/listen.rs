//! Listening sockets: a unix socket (stale file removed only when nothing
//! answers on it; mode, owner and group set so Postfix can connect) or a
//! TCP socket whose connections acknowledge reads at once (no delayed-ACK
//! stall with an MTA that leaves Nagle's algorithm on).
//!
//! The connections are rmilter's own [`MilterStream`], not tokio's
//! streams: tokio registers every stream for both read and write readiness,
//! and with edge-triggered epoll each reply rmilter writes comes back as a
//! "writable" event once the MTA has read it, a wake-up of the runtime for
//! nothing (a third of all wake-ups through Postfix).

use crate::config::{ListenAddr, SocketOptions};
use anyhow::{Context, bail};
use socket2::Socket;
use std::future::Future;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll, ready};
use tokio::io::unix::AsyncFd;
use tokio::io::{Interest, ReadBuf};
use tracing::{info, warn};

/// A listening milter socket, unix or TCP, registered for readability only.
pub struct MilterListener {
    fd: AsyncFd<Socket>,
    tcp: bool,
    /// After an accept failure that is not one connection's (no file
    /// descriptors or memory left): when to try again.
    pause: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// How long accepting pauses after a failure that is not one connection's.
const ACCEPT_PAUSE: std::time::Duration = std::time::Duration::from_millis(500);

impl MilterListener {
    fn new(socket: Socket, tcp: bool) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Ok(Self {
            fd: register(socket, Interest::READABLE)?,
            tcp,
            pause: None,
        })
    }
}

/// A failed accept that concerns only the connection being accepted (the
/// client went away before it was accepted).
fn one_connections_failure(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

/// Register a socket with the runtime's reactor for `interest`.
fn register(socket: Socket, interest: Interest) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: the `Socket` owns its file descriptor, closes it only when
    // dropped, and `as_raw_fd` always returns that same descriptor; the
    // socket is never swapped out through `AsyncFd::get_mut`.
    Ok(unsafe { AsyncFd::register_with_interest(socket, interest) }?)
}

impl indymilter::Listener for MilterListener {
    type Io = MilterStream;

    /// A failed accept never stops the milter (indymilter ends its run on
    /// the first error a listener returns): a failure of the one connection
    /// is skipped, any other (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`) is
    /// logged and accepting pauses for [`ACCEPT_PAUSE`], while the sessions
    /// already open go on and free what they hold. Waiting connections stay
    /// in the kernel's queue meanwhile.
    fn poll_accept(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<MilterStream>> {
        loop {
            if let Some(pause) = self.pause.as_mut() {
                ready!(pause.as_mut().poll(cx));
                self.pause = None;
            }
            let mut guard = ready!(self.fd.poll_read_ready(cx))?;
            let accepted = guard.try_io(|listener| {
                listener
                    .get_ref()
                    .accept4(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            });
            match accepted {
                Ok(Ok((socket, _peer))) => {
                    if self.tcp
                        && let Err(e) = socket.set_tcp_nodelay(true)
                    {
                        warn!(error = %e, "cannot set TCP_NODELAY on a milter connection");
                    }
                    match MilterStream::new(socket, self.tcp) {
                        Ok(stream) => return Poll::Ready(Ok(stream)),
                        Err(e) => self.failed(&e),
                    }
                }
                Ok(Err(e)) if one_connections_failure(&e) => {}
                Ok(Err(e)) => self.failed(&e),
                Err(_would_block) => {}
            }
        }
    }
}

impl MilterListener {
    fn failed(&mut self, e: &io::Error) {
        tracing::error!(
            error = %e,
            pause_ms = ACCEPT_PAUSE.as_millis() as u64,
            "cannot accept a milter connection; accepting again after a pause"
        );
        self.pause = Some(Box::pin(tokio::time::sleep(ACCEPT_PAUSE)));
    }
}

/// A milter connection.
///
/// It waits for readability only. rmilter's replies are small (an answer,
/// a few header edits) and a socket's send buffer holds hundreds of them,
/// so a write goes out at once; only a write the kernel refuses
/// (`EWOULDBLOCK`, an MTA that stopped reading) registers the socket for
/// write readiness too, and then it stays so.
///
/// Header edits are held until the answer that ends the message and sent
/// with it in one write. indymilter writes and flushes every reply on its
/// own; at end of message an edit is always followed by the final answer,
/// and the MTA reads on until that answer, so sending the edits apart
/// would only cost a system call here and a wake-up of the MTA's reader.
///
/// On TCP the ACK for every read is sent at once: rmilter negotiates "no
/// reply" for several stages, so the MTA writes several milter packets back
/// to back. Postfix keeps Nagle's algorithm on its milter sockets: its
/// second small write waits until the first is acknowledged, and Linux
/// delays that ACK (40 ms) when rmilter has nothing to send back.
/// `TCP_QUICKACK` sends the pending ACK now; the kernel clears the flag
/// again on its own, so it is set after every read that returned data.
pub struct MilterStream {
    /// `None` only while the registration is being replaced.
    fd: Option<AsyncFd<Socket>>,
    tcp: bool,
    writable_interest: bool,
    out: Outgoing,
}

/// What rmilter wrote and the MTA has not been sent yet.
#[derive(Default)]
struct Outgoing {
    buf: Vec<u8>,
    /// How much of `buf` is sent.
    sent: usize,
    /// Where the next milter packet starts in `buf` (past its end while a
    /// packet is incomplete).
    next_packet: usize,
    /// The reply code of the last packet that started in `buf`.
    last_code: u8,
}

impl Outgoing {
    /// The reply codes of the message edits (`SMFIR_ADDRCPT`,
    /// `SMFIR_DELRCPT`, `SMFIR_ADDRCPT_PAR`, `SMFIR_REPLBODY`,
    /// `SMFIR_CHGFROM`, `SMFIR_ADDHEADER`, `SMFIR_INSHEADER`,
    /// `SMFIR_CHGHEADER`, `SMFIR_QUARANTINE`): never the last reply of an
    /// exchange. `SMFIR_PROGRESS` is not one of them: it must leave at once.
    const EDITS: &'static [u8] = b"+-2behimq";

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while self.next_packet + 5 <= self.buf.len() {
            let at = self.next_packet;
            let len = u32::from_be_bytes([
                self.buf[at],
                self.buf[at + 1],
                self.buf[at + 2],
                self.buf[at + 3],
            ]);
            self.last_code = self.buf[at + 4];
            self.next_packet = at + 4 + len as usize;
        }
    }

    /// Whether everything waiting ends with a complete message edit.
    fn holds_edit(&self) -> bool {
        self.next_packet == self.buf.len() && Self::EDITS.contains(&self.last_code)
    }

    fn unsent(&self) -> &[u8] {
        &self.buf[self.sent..]
    }

    fn clear(&mut self) {
        // Keep the capacity: the next message's replies are as small.
        self.buf.clear();
        self.sent = 0;
        self.next_packet = 0;
        self.last_code = 0;
    }
}

impl MilterStream {
    fn new(socket: Socket, tcp: bool) -> io::Result<Self> {
        Ok(Self {
            fd: Some(register(socket, Interest::READABLE)?),
            tcp,
            writable_interest: false,
            out: Outgoing::default(),
        })
    }

    fn fd(&self) -> io::Result<&AsyncFd<Socket>> {
        self.fd.as_ref().ok_or_else(lost_registration)
    }

    /// Register for write readiness as well (after a refused write).
    fn want_writable(&mut self) -> io::Result<()> {
        let socket = self
            .fd
            .take()
            .map(AsyncFd::into_inner)
            .ok_or_else(lost_registration)?;
        self.fd = Some(register(socket, Interest::READABLE | Interest::WRITABLE)?);
        self.writable_interest = true;
        Ok(())
    }

    /// Send everything waiting.
    fn poll_send(&mut self, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        while !self.out.unsent().is_empty() {
            let sent = if self.writable_interest {
                let fd = self.fd()?;
                let mut guard = ready!(fd.poll_write_ready(cx))?;
                match guard.try_io(|socket| send(socket.get_ref(), self.out.unsent())) {
                    Ok(sent) => sent,
                    Err(_would_block) => continue,
                }
            } else {
                match send(self.fd()?.get_ref(), self.out.unsent()) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.want_writable()?;
                        continue;
                    }
                    sent => sent,
                }
            };
            match sent {
                Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.out.sent += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
        self.out.clear();
        Poll::Ready(Ok(()))
    }
}

/// A connection whose re-registration for write readiness failed: it was
/// closed then, and every later call says so.
fn lost_registration() -> io::Error {
    io::Error::other("milter connection lost its registration")
}

fn send(socket: &Socket, bytes: &[u8]) -> io::Result<usize> {
    socket.send_with_flags(bytes, libc::MSG_NOSIGNAL)
}

impl tokio::io::AsyncRead for MilterStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.fd()?;
        loop {
            let mut guard = ready!(fd.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            let wanted = unfilled.len();
            match (&mut fd.get_ref()).read(unfilled) {
                Ok(n) => {
                    if n < wanted {
                        // A short read emptied the socket (epoll is
                        // edge-triggered): wait for the next event instead
                        // of reading again into EWOULDBLOCK.
                        guard.clear_ready();
                    }
                    if n > 0 && this.tcp {
                        // Best effort: a failure only means the old delayed ACK.
                        let _ = fd.get_ref().set_tcp_quickack(true);
                    }
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => guard.clear_ready(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl tokio::io::AsyncWrite for MilterStream {
    /// Takes everything; [`poll_flush`](Self::poll_flush) sends it.
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().out.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.out.holds_edit() {
            return Poll::Ready(Ok(()));
        }
        this.poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Poll::Ready(this.fd()?.get_ref().shutdown(std::net::Shutdown::Write))
    }
}

/// A bound milter socket.
pub struct Bound {
    pub listener: MilterListener,
    /// The unix socket file to remove at exit.
    pub unix_path: Option<PathBuf>,
    /// The address actually bound (a port of 0 resolved).
    pub local: ListenAddr,
}

/// Remove the unix socket file at exit, if there is one.
pub fn remove_socket(path: Option<&Path>) {
    if let Some(path) = path
        && let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), error = %e, "could not remove the socket file");
    }
}

/// Bind the configured socket. Must run inside the tokio runtime.
pub fn bind(addr: &ListenAddr, socket: &SocketOptions) -> anyhow::Result<Bound> {
    match addr {
        ListenAddr::Inet(sa) => {
            let std = std::net::TcpListener::bind(sa)
                .with_context(|| format!("cannot listen on {addr}"))?;
            let local = ListenAddr::Inet(std.local_addr()?);
            if !sa.ip().is_loopback() {
                warn!(listen = %local, "listening on a non-loopback address: every host that can connect can have mail signed");
            }
            Ok(Bound {
                listener: MilterListener::new(Socket::from(OwnedFd::from(std)), true)?,
                unix_path: None,
                local,
            })
        }
        ListenAddr::Unix(path) => {
            remove_stale(path)?;
            if let Some(parent) = path.parent()
                && !parent.exists()
            {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o755)
                    .create(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            // bind(2) creates the file with the umask's mode, which can only be
            // stricter than the mode set next (connecting needs write access).
            let std = std::os::unix::net::UnixListener::bind(path)
                .with_context(|| format!("cannot listen on {addr}"))?;
            set_permissions(path, socket)?;
            Ok(Bound {
                listener: MilterListener::new(Socket::from(OwnedFd::from(std)), false)?,
                unix_path: Some(path.clone()),
                local: addr.clone(),
            })
        }
    }
}

/// A socket file left by a process that is gone is removed; a live one, or
/// anything that is not a socket, is an error.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to remove it",
            path.display()
        );
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => bail!(
            "{}: another process is listening on this socket (is rmilter already running?)",
            path.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
            info!(path = %path.display(), "removed stale socket file");
            Ok(())
        }
        Err(e) => {
            Err(e).with_context(|| format!("cannot check whether {} is in use", path.display()))
        }
    }
}

fn set_permissions(path: &Path, socket: &SocketOptions) -> anyhow::Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(socket.mode))
        .with_context(|| format!("cannot set mode {:04o} on {}", socket.mode, path.display()))?;
    if socket.owner.is_some() || socket.group.is_some() {
        std::os::unix::fs::chown(
            path,
            socket.owner.as_ref().map(|(_, uid)| *uid),
            socket.group.as_ref().map(|(_, gid)| *gid),
        )
        .with_context(|| {
            format!(
                "cannot set owner {} group {} on {}",
                socket.owner.as_ref().map_or("-", |(n, _)| n),
                socket.group.as_ref().map_or("-", |(n, _)| n),
                path.display()
            )
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;
    use tokio::io::AsyncWriteExt;

    fn pair() -> (MilterStream, UnixStream) {
        let (ours, mta) = UnixStream::pair().unwrap();
        ours.set_nonblocking(true).unwrap();
        mta.set_nonblocking(true).unwrap();
        let stream = MilterStream::new(Socket::from(OwnedFd::from(ours)), false).unwrap();
        (stream, mta)
    }

    fn packet(code: u8, data: &[u8]) -> Vec<u8> {
        let mut p = (data.len() as u32 + 1).to_be_bytes().to_vec();
        p.push(code);
        p.extend_from_slice(data);
        p
    }

    /// What the MTA can read now, without waiting.
    fn readable(mta: &UnixStream) -> Vec<u8> {
        let mut got = vec![0; 65536];
        match (&mut &*mta).read(&mut got) {
            Ok(n) => got[..n].to_vec(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Vec::new(),
            Err(e) => panic!("{e}"),
        }
    }

    #[tokio::test]
    async fn header_edits_leave_with_the_answer_that_ends_the_message() {
        let (mut stream, mta) = pair();
        let insert = packet(b'i', b"\0\0\0\0Authentication-Results\0mx; none\0");
        let change = packet(b'm', b"\0\0\0\x01Authentication-Results\0\0");
        let answer = packet(b'c', b"");
        stream.write_all(&insert).await.unwrap();
        stream.flush().await.unwrap();
        stream.write_all(&change).await.unwrap();
        stream.flush().await.unwrap();
        let early = readable(&mta).len();
        assert_eq!(
            early, 0,
            "{early} bytes of edits went out before the answer"
        );
        stream.write_all(&answer).await.unwrap();
        stream.flush().await.unwrap();
        assert_eq!(readable(&mta), [insert, change, answer].concat());
    }

    #[tokio::test]
    async fn answers_and_progress_leave_at_once() {
        let (mut stream, mta) = pair();
        for code in [b'O', b'c', b'p', b'a', b't', b'y'] {
            let reply = packet(code, b"x\0");
            stream.write_all(&reply).await.unwrap();
            stream.flush().await.unwrap();
            assert_eq!(readable(&mta), reply, "reply {:?} was held", code as char);
        }
    }

    #[tokio::test]
    async fn a_reply_written_in_pieces_is_framed_whole() {
        // Larger than indymilter's write buffer: its length and code come
        // in one write, the rest in another, then one flush.
        let (mut stream, mta) = pair();
        let big = packet(b'h', &vec![b'x'; 20_000]);
        stream.write_all(&big[..5]).await.unwrap();
        stream.write_all(&big[5..]).await.unwrap();
        stream.flush().await.unwrap();
        let early = readable(&mta).len();
        assert_eq!(
            early, 0,
            "{early} bytes of the edit went out before the answer"
        );
        let answer = packet(b'a', b"");
        stream.write_all(&answer).await.unwrap();
        stream.flush().await.unwrap();
        let mut got = Vec::new();
        while got.len() < big.len() + answer.len() {
            let more = readable(&mta);
            assert!(!more.is_empty(), "only {} bytes arrived", got.len());
            got.extend(more);
        }
        assert_eq!(got, [big, answer].concat());
    }

    #[tokio::test]
    async fn a_write_the_kernel_refuses_waits_for_the_mta_to_read() {
        let (mut stream, mta) = pair();
        mta.set_nonblocking(false).unwrap();
        // Far more than a unix socket's send buffer holds.
        let body: Vec<u8> = (0..8 << 20).map(|i: u32| (i % 251) as u8).collect();
        let data = packet(b'a', &body);
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(200));
            let mut got = Vec::new();
            (&mut &mta).read_to_end(&mut got).unwrap();
            got
        });
        let written = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            stream.write_all(&data).await?;
            stream.flush().await?;
            stream.shutdown().await
        });
        written.await.expect("the write never finished").unwrap();
        assert!(
            stream.writable_interest,
            "8 MiB went out without the kernel refusing a write: the test tests nothing"
        );
        drop(stream);
        assert_eq!(reader.join().unwrap(), data);
    }
}
