//! systemd readiness notification (sd_notify(3)) without libsystemd: when
//! `$NOTIFY_SOCKET` is set (a unit with `Type=notify`), one datagram per
//! state change is sent to it: `READY=1` once the socket is bound and
//! privileges are dropped, `RELOADING=1` (with `MONOTONIC_USEC`, which
//! `Type=notify-reload` needs) and `READY=1` again around a reload,
//! `STOPPING=1` at shutdown, each with a `STATUS=` line for `systemctl
//! status`. Without `$NOTIFY_SOCKET` nothing is sent.

use std::io;
use std::os::unix::net::UnixDatagram;
use tracing::warn;

/// `READY=1` with a status line.
pub fn ready(status: &str) {
    send(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// `RELOADING=1`: a reload has started.
pub fn reloading() {
    send(&format!(
        "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading",
        monotonic_usec()
    ));
}

/// `STOPPING=1`: shutdown has started.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=stopping: waiting for messages in progress");
}

/// A status line only.
pub fn status(status: &str) {
    send(&format!("STATUS={}", one_line(status)));
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

fn send(message: &str) {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_to(&target.to_string_lossy(), message.as_bytes()) {
        warn!(error = %e, socket = %target.to_string_lossy(), "cannot notify systemd");
    }
}

/// Send one datagram to a `$NOTIFY_SOCKET` address: a path, or an
/// abstract socket name written with a leading `@`.
pub fn send_to(target: &str, message: &[u8]) -> io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    if let Some(name) = target.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
        socket.send_to_addr(message, &addr)?;
    } else if target.starts_with('/') {
        socket.send_to(message, target)?;
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither a path nor an abstract socket name",
        ));
    }
    Ok(())
}

/// CLOCK_MONOTONIC in microseconds, as systemd compares it.
fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(t) => (t.tv_sec() as u64) * 1_000_000 + (t.tv_nsec() as u64) / 1000,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_reach_path_and_abstract_sockets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let receiver = UnixDatagram::bind(&path).unwrap();
        send_to(path.to_str().unwrap(), b"READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("rmilter-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let abstract_receiver = UnixDatagram::bind_addr(&addr).unwrap();
        send_to(&format!("@{name}"), b"STOPPING=1").unwrap();
        let n = abstract_receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");

        assert!(send_to("relative", b"x").is_err());
        assert!(monotonic_usec() > 0);
    }
}
