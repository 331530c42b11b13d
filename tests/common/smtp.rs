//! A small blocking SMTP client that submits mail to the private Postfix the way real clients do.
//!
//! rmilter decides between signing and verifying from who the client is, so a submission names
//! its [`Client`]: a host on the internal network (plain SMTP from 127.0.0.1), a host on the
//! internet (Postfix's XCLIENT command replaces the client address and name before the milter's
//! connect event), or a user who logs in with real SMTP AUTH PLAIN against Cyrus SASL.
//! One call is one SMTP session; the outcome says at which stage it ended and with which reply,
//! so a test can assert "refused at RCPT with 550" as easily as "queued as ABC123".
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// How long the client waits for one server reply. Postfix gives a milter 30 s per SMTP command
/// before `milter_default_action` applies, so this is comfortably longer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(90);

/// Who the SMTP client is, as Postfix (and so the milter) sees it.
#[derive(Clone, Debug)]
pub enum Client {
    /// Plain SMTP from 127.0.0.1 (inside `mynetworks`).
    Internal,
    /// A client elsewhere: XCLIENT ADDR=.. NAME=.. sets the address and verified host name.
    External { addr: String, name: String },
    /// SMTP AUTH PLAIN from 127.0.0.1.
    Authenticated { user: String, password: String },
    /// XCLIENT to an outside address, then SMTP AUTH PLAIN: a roaming user whose only claim to
    /// be "outbound" is the login.
    AuthenticatedExternal {
        addr: String,
        name: String,
        user: String,
        password: String,
    },
}

impl Client {
    pub fn external(addr: &str, name: &str) -> Client {
        Client::External {
            addr: addr.into(),
            name: name.into(),
        }
    }

    pub fn authenticated(user: &str, password: &str) -> Client {
        Client::Authenticated {
            user: user.into(),
            password: password.into(),
        }
    }

    pub fn authenticated_external(addr: &str, name: &str, user: &str, password: &str) -> Client {
        Client::AuthenticatedExternal {
            addr: addr.into(),
            name: name.into(),
            user: user.into(),
            password: password.into(),
        }
    }

    fn xclient(&self) -> Option<(&str, &str)> {
        match self {
            Client::External { addr, name } | Client::AuthenticatedExternal { addr, name, .. } => {
                Some((addr, name))
            }
            _ => None,
        }
    }

    fn login(&self) -> Option<(&str, &str)> {
        match self {
            Client::Authenticated { user, password }
            | Client::AuthenticatedExternal { user, password, .. } => Some((user, password)),
            _ => None,
        }
    }
}

/// One SMTP transaction.
#[derive(Clone, Debug)]
pub struct Submission {
    pub client: Client,
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// The message with CRLF line ends, without the final "."; the client dot-stuffs it.
    pub data: Vec<u8>,
}

impl Submission {
    /// A submission with HELO "client.example.net"; adjust the fields as needed.
    pub fn new(client: Client, mail_from: &str, rcpt_to: &[&str], data: &[u8]) -> Submission {
        Submission {
            client,
            helo: "client.example.net".into(),
            mail_from: mail_from.into(),
            rcpt_to: rcpt_to.iter().map(|r| r.to_string()).collect(),
            data: data.to_vec(),
        }
    }
}

/// Where a session ended and the server's last reply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SmtpOutcome {
    /// "connect", "helo", "xclient", "auth", "mail", "rcpt", "data" or "eom".
    pub stage: &'static str,
    pub code: u16,
    /// Reply text without the code, lines joined with "\n".
    pub text: String,
    /// From "250 2.0.0 Ok: queued as ID" after end-of-data.
    pub queue_id: Option<String>,
}

impl SmtpOutcome {
    /// The message was accepted for delivery.
    pub fn accepted(&self) -> bool {
        self.stage == "eom" && self.code / 100 == 2
    }
}

/// Runs one SMTP session against 127.0.0.1:`port`. Panics only on I/O failures (a server that
/// does not answer within [`REPLY_TIMEOUT`]); SMTP refusals are returned as the outcome.
pub fn submit(port: u16, s: &Submission) -> SmtpOutcome {
    match session(port, s) {
        Ok(o) => o,
        Err(e) => panic!("SMTP session with 127.0.0.1:{port} failed: {e}"),
    }
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn reply(&mut self) -> std::io::Result<(u16, String)> {
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            if self.reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed after {lines:?}"),
                ));
            }
            let line = line.trim_end_matches(['\r', '\n']);
            if line.len() < 3 || !line.is_char_boundary(3) {
                return Err(std::io::Error::other(format!(
                    "malformed reply line {line:?}"
                )));
            }
            let code: u16 = line[..3]
                .parse()
                .map_err(|_| std::io::Error::other(format!("malformed reply line {line:?}")))?;
            lines.push(line.get(4..).unwrap_or("").to_string());
            if line.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, lines.join("\n")));
            }
        }
    }

    fn command(&mut self, cmd: &str) -> std::io::Result<(u16, String)> {
        // One write: a command split over two small segments would wait
        // for the server's delayed ACK (Nagle), 40 ms per command.
        self.writer.write_all(format!("{cmd}\r\n").as_bytes())?;
        self.reply()
    }
}

fn session(port: u16, s: &Submission) -> std::io::Result<SmtpOutcome> {
    let done = |stage, (code, text): (u16, String)| SmtpOutcome {
        stage,
        code,
        text,
        queue_id: None,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10))?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
    let mut c = Conn {
        reader: BufReader::new(stream.try_clone()?),
        writer: stream,
    };

    let r = c.reply()?;
    if r.0 != 220 {
        return Ok(done("connect", r));
    }
    let r = c.command(&format!("EHLO {}", s.helo))?;
    if r.0 != 250 {
        return Ok(done("helo", r));
    }
    if let Some((addr, name)) = s.client.xclient() {
        // XCLIENT restarts the session: the server greets again and wants a new EHLO.
        let r = c.command(&format!(
            "XCLIENT ADDR={} NAME={}",
            xtext(addr),
            xtext(name)
        ))?;
        if r.0 != 220 {
            return Ok(done("xclient", r));
        }
        let r = c.command(&format!("EHLO {}", s.helo))?;
        if r.0 != 250 {
            return Ok(done("helo", r));
        }
    }
    if let Some((user, password)) = s.client.login() {
        let token = base64(format!("\0{user}\0{password}").as_bytes());
        let r = c.command(&format!("AUTH PLAIN {token}"))?;
        if r.0 != 235 {
            let _ = c.command("QUIT");
            return Ok(done("auth", r));
        }
    }
    let r = c.command(&format!("MAIL FROM:<{}>", s.mail_from))?;
    if r.0 != 250 {
        let _ = c.command("QUIT");
        return Ok(done("mail", r));
    }
    for rcpt in &s.rcpt_to {
        let r = c.command(&format!("RCPT TO:<{rcpt}>"))?;
        if r.0 != 250 {
            let _ = c.command("QUIT");
            return Ok(done("rcpt", r));
        }
    }
    let r = c.command("DATA")?;
    if r.0 != 354 {
        let _ = c.command("QUIT");
        return Ok(done("data", r));
    }
    c.writer.write_all(&dot_stuff(&s.data))?;
    let (code, text) = c.reply()?;
    let queue_id = text
        .split("queued as ")
        .nth(1)
        .map(|id| id.trim().to_string());
    let _ = c.command("QUIT");
    Ok(SmtpOutcome {
        stage: "eom",
        code,
        text,
        queue_id,
    })
}

/// Dot-stuffs `data`, makes sure it ends with CRLF and appends the terminating ".".
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 16);
    let mut at_line_start = true;
    for &b in data {
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        out.push(b);
        at_line_start = b == b'\n';
    }
    if !data.is_empty() && !data.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// RFC 3461 xtext, as XCLIENT attribute values require.
fn xtext(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'!'..=b'~' if b != b'+' && b != b'=' => (b as char).to_string(),
            _ => format!("+{b:02X}"),
        })
        .collect()
}

/// Standard base64 with padding (RFC 4648 §4).
pub fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | (b as u32) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
