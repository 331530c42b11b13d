//! An in-process SMTP server that stands in for "the next hop" in rmilter's end-to-end tests.
//!
//! The private Postfix instance relays every message to this sink
//! (`relayhost = [127.0.0.1]:PORT`), so a test can look at exactly the bytes Postfix would have
//! sent on: envelope sender, recipients and the dot-unstuffed message with CRLF line ends.
//! The sink answers 250 to everything unless a test asks it to refuse the message at
//! end-of-data ([`Sink::set_data_reply`]), which makes Postfix defer or bounce it.
//! Plain std threads: one accept loop, one thread per connection, every read bounded by a timeout.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a connection may stay silent before the sink drops it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest message the sink accepts; protects the test process from a runaway client.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// One message as Postfix delivered it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// Envelope sender without angle brackets ("" for the null sender).
    pub mail_from: String,
    /// Envelope recipients without angle brackets, in RCPT order.
    pub rcpt_to: Vec<String>,
    /// The message, dot-unstuffed, with CRLF line ends, without the terminating ".".
    pub data: Vec<u8>,
}

impl Delivered {
    /// The header section (everything before the first empty line), as text.
    pub fn header_text(&self) -> String {
        let end = find(&self.data, b"\r\n\r\n").map_or(self.data.len(), |i| i + 2);
        String::from_utf8_lossy(&self.data[..end]).into_owned()
    }

    /// Values of every header field named `name` (case-insensitive), unfolded, in message order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut current: Option<String> = None;
        for line in self.header_text().split("\r\n") {
            if line.starts_with(' ') || line.starts_with('\t') {
                if let Some(v) = current.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if let Some(v) = current.take() {
                out.push(v);
            }
            if let Some((n, v)) = line.split_once(':')
                && n.eq_ignore_ascii_case(name)
            {
                current = Some(v.trim().to_string());
            }
        }
        out.extend(current);
        out
    }
}

/// A reply the sink sends instead of its default "250".
#[derive(Clone, Debug)]
struct Reply {
    code: u16,
    text: String,
}

#[derive(Default)]
struct State {
    messages: Vec<Delivered>,
    /// Messages refused because of `data_reply`, kept for tests that count retries.
    refused: Vec<Delivered>,
    data_reply: Option<Reply>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

/// The running sink; dropping it stops the accept loop.
pub struct Sink {
    port: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Sink {
    /// Listens on 127.0.0.1 on a free port.
    pub fn start() -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").expect("sink: bind 127.0.0.1:0");
        let port = listener.local_addr().expect("sink: local_addr").port();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let for_thread = Arc::clone(&shared);
        let acceptor = std::thread::Builder::new()
            .name(format!("sink-{port}"))
            .spawn(move || accept_loop(listener, for_thread))
            .expect("sink: spawn accept thread");
        Sink {
            port,
            shared,
            acceptor: Some(acceptor),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Everything delivered so far.
    pub fn messages(&self) -> Vec<Delivered> {
        self.shared.state.lock().unwrap().messages.clone()
    }

    /// Messages the sink refused with the reply set by [`Sink::set_data_reply`].
    pub fn refused(&self) -> Vec<Delivered> {
        self.shared.state.lock().unwrap().refused.clone()
    }

    /// Waits until at least `n` messages were delivered or `timeout` passed; returns what arrived
    /// (a test asserts on the length, so a timeout shows up as a readable failure).
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Delivered> {
        self.wait_until(timeout, |s| s.messages.len() >= n).messages
    }

    /// Waits until at least `n` messages were refused (see [`Sink::set_data_reply`]).
    pub fn wait_for_refused(&self, n: usize, timeout: Duration) -> Vec<Delivered> {
        self.wait_until(timeout, |s| s.refused.len() >= n).refused
    }

    /// Makes the sink answer `code text` after DATA instead of 250 (4xx: Postfix defers the
    /// message, 5xx: it bounces). The message is recorded under [`Sink::refused`].
    pub fn set_data_reply(&self, code: u16, text: &str) {
        assert!(
            (400..600).contains(&code),
            "sink reply must be 4xx or 5xx, got {code}"
        );
        self.shared.state.lock().unwrap().data_reply = Some(Reply {
            code,
            text: text.to_string(),
        });
    }

    /// Back to accepting every message.
    pub fn accept_all(&self) {
        self.shared.state.lock().unwrap().data_reply = None;
    }

    /// Forgets the messages seen so far.
    pub fn clear(&self) {
        let mut s = self.shared.state.lock().unwrap();
        s.messages.clear();
        s.refused.clear();
    }

    fn wait_until(&self, timeout: Duration, done: impl Fn(&State) -> bool) -> StateSnapshot {
        let deadline = Instant::now() + timeout;
        let mut s = self.shared.state.lock().unwrap();
        while !done(&s) {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            s = self
                .shared
                .changed
                .wait_timeout(s, deadline - now)
                .unwrap()
                .0;
        }
        StateSnapshot {
            messages: s.messages.clone(),
            refused: s.refused.clone(),
        }
    }
}

struct StateSnapshot {
    messages: Vec<Delivered>,
    refused: Vec<Delivered>,
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() so the loop sees the stop flag.
        let _ = TcpStream::connect_timeout(
            &std::net::SocketAddr::from(([127, 0, 0, 1], self.port)),
            Duration::from_secs(1),
        );
        if let Some(h) = self.acceptor.take() {
            let _ = h.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = conn else { continue };
        let shared = Arc::clone(&shared);
        // Connection threads are detached: each ends at QUIT, EOF or the idle timeout.
        let _ = std::thread::Builder::new()
            .name("sink-conn".into())
            .spawn(move || {
                let _ = serve(stream, &shared);
            });
    }
}

fn serve(stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(IDLE_TIMEOUT))?;
    stream.set_write_timeout(Some(IDLE_TIMEOUT))?;
    let mut out = stream.try_clone()?;
    let mut input = BufReader::new(stream);
    out.write_all(b"220 sink.test ESMTP rmilter test sink\r\n")?;

    let mut mail_from: Option<String> = None;
    let mut rcpt_to: Vec<String> = Vec::new();
    let mut line = Vec::new();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let cmd = text.trim_end_matches(['\r', '\n']);
        let verb = cmd.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-sink.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SMTPUTF8\r\n",
            "HELO" => b"250 sink.test\r\n",
            "MAIL" => {
                mail_from = Some(path_arg(cmd));
                rcpt_to.clear();
                b"250 2.1.0 ok\r\n"
            }
            "RCPT" if mail_from.is_some() => {
                rcpt_to.push(path_arg(cmd));
                b"250 2.1.5 ok\r\n"
            }
            "RCPT" => b"503 5.5.1 MAIL first\r\n",
            "DATA" if mail_from.is_some() && !rcpt_to.is_empty() => {
                out.write_all(b"354 go ahead\r\n")?;
                let data = read_data(&mut input)?;
                let msg = Delivered {
                    mail_from: mail_from.take().unwrap_or_default(),
                    rcpt_to: std::mem::take(&mut rcpt_to),
                    data,
                };
                let mut s = shared.state.lock().unwrap();
                let answer = match s.data_reply.clone() {
                    Some(r) => {
                        s.refused.push(msg);
                        format!("{} {}\r\n", r.code, r.text)
                    }
                    None => {
                        s.messages.push(msg);
                        "250 2.0.0 ok: delivered to the rmilter test sink\r\n".to_string()
                    }
                };
                drop(s);
                shared.changed.notify_all();
                out.write_all(answer.as_bytes())?;
                continue;
            }
            "DATA" => b"503 5.5.1 need MAIL and RCPT first\r\n",
            "RSET" => {
                mail_from = None;
                rcpt_to.clear();
                b"250 2.0.0 ok\r\n"
            }
            "NOOP" => b"250 2.0.0 ok\r\n",
            "QUIT" => {
                out.write_all(b"221 2.0.0 bye\r\n")?;
                break;
            }
            _ => b"502 5.5.2 command not implemented\r\n",
        };
        out.write_all(reply)?;
    }
    let _ = out.shutdown(Shutdown::Both);
    Ok(())
}

/// The address inside `<...>` of "MAIL FROM:<a@b> SIZE=.." / "RCPT TO:<a@b>".
fn path_arg(cmd: &str) -> String {
    match (cmd.find('<'), cmd.find('>')) {
        (Some(a), Some(b)) if b > a => cmd[a + 1..b].to_string(),
        _ => cmd
            .split_once(':')
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default(),
    }
}

/// Reads DATA lines up to the lone ".", undoing dot-stuffing; line ends come back as CRLF.
fn read_data(input: &mut impl BufRead) -> std::io::Result<Vec<u8>> {
    let mut data = Vec::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "EOF in DATA",
            ));
        }
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let body = body.strip_suffix(b"\r").unwrap_or(body);
        if body == b"." {
            return Ok(data);
        }
        let body = body.strip_prefix(b".").unwrap_or(body);
        data.extend_from_slice(body);
        data.extend_from_slice(b"\r\n");
        if data.len() > MAX_MESSAGE {
            return Err(std::io::Error::other("message too large for the test sink"));
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
