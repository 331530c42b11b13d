//! Listening sockets: a unix socket (stale file removed only when nothing
//! answers on it; mode, owner and group set so Postfix can connect) or a
//! TCP socket whose connections acknowledge reads at once (no delayed-ACK
//! stall with an MTA that leaves Nagle's algorithm on).

use crate::config::{ListenAddr, SocketOptions};
use anyhow::{Context, bail};
use indymilter::EitherListener;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::net::{TcpListener, UnixListener};
use tracing::{info, warn};

/// A TCP milter listener whose connections have Nagle's algorithm off and
/// acknowledge what they read at once (see [`QuickAck`]). With Nagle a
/// small answer written after a partial one would wait for the MTA's
/// delayed ACK (up to 40 ms on Linux) instead of leaving at once.
pub struct NoDelay(pub TcpListener);

impl indymilter::Listener for NoDelay {
    type Io = QuickAck;

    fn poll_accept(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<Self::Io>> {
        self.0.poll_accept(cx).map_ok(|(stream, _)| {
            if let Err(e) = stream.set_nodelay(true) {
                warn!(error = %e, "cannot set TCP_NODELAY on a milter connection");
            }
            QuickAck(stream)
        })
    }
}

/// A milter TCP connection that sends the ACK for every read at once.
///
/// rmilter negotiates "no reply" for several stages, so the MTA writes
/// several milter packets back to back. Postfix keeps Nagle's algorithm on
/// its milter sockets: its second small write waits until the first is
/// acknowledged, and Linux delays that ACK (40 ms) when rmilter has nothing
/// to send back. `TCP_QUICKACK` sends the pending ACK now; the kernel
/// clears the flag again on its own, so it is set after every read that
/// returned data (one `setsockopt` per read, 1–2 µs).
pub struct QuickAck(tokio::net::TcpStream);

impl QuickAck {
    fn ack_now(&self) {
        // Best effort: a failure only means the old delayed ACK.
        let _ = socket2::SockRef::from(&self.0).set_tcp_quickack(true);
    }
}

impl tokio::io::AsyncRead for QuickAck {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if matches!(poll, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.ack_now();
        }
        poll
    }
}

impl tokio::io::AsyncWrite for QuickAck {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }
}

/// A bound milter socket.
pub struct Bound {
    pub listener: EitherListener<NoDelay, UnixListener>,
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
            std.set_nonblocking(true)?;
            let listener = TcpListener::from_std(std)?;
            let local = ListenAddr::Inet(listener.local_addr()?);
            if !sa.ip().is_loopback() {
                warn!(listen = %local, "listening on a non-loopback address: every host that can connect can have mail signed");
            }
            Ok(Bound {
                listener: EitherListener::Tcp(NoDelay(listener)),
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
            std.set_nonblocking(true)?;
            set_permissions(path, socket)?;
            let listener = UnixListener::from_std(std)?;
            Ok(Bound {
                listener: EitherListener::Unix(listener),
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
