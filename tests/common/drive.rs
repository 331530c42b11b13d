//! Drive a message through the milter protocol the way Postfix does:
//! connect, HELO, MAIL, RCPT, header fields (values with their leading
//! space and "\n"-folding), end of headers, body chunks of at most 65535
//! bytes, end of message, with Postfix's macros. The milter's header edits
//! are applied to give the message as Postfix would deliver it.

#![allow(dead_code)]

use indymilter::{MacroStage, ProtoOpts};
use indymilter_test::{EomAction, Status, TestConnection};
use std::net::SocketAddr;
use std::time::Duration;

/// Header fields as (name, value) byte strings.
pub type Fields = Vec<(Vec<u8>, Vec<u8>)>;

/// How the message reaches the milter.
#[derive(Clone, Debug)]
pub struct Envelope {
    pub client_name: String,
    pub client_addr: SocketAddr,
    pub helo: String,
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
    /// `{auth_authen}`: a SASL login name.
    pub auth: Option<String>,
    /// `{daemon_name}`.
    pub daemon_name: String,
    pub queue_id: String,
}

impl Envelope {
    /// An external SMTP client.
    pub fn inbound() -> Envelope {
        Envelope {
            client_name: "mail.example.net".into(),
            client_addr: "198.51.100.7:41000".parse().unwrap(),
            helo: "mail.example.net".into(),
            mail_from: "<sender@example.net>".into(),
            rcpt_to: vec!["<user@example.org>".into()],
            auth: None,
            daemon_name: "mx.example.org".into(),
            queue_id: "4ABCDE1234".into(),
        }
    }

    /// A SASL-authenticated submission from a remote address.
    pub fn authenticated(user: &str) -> Envelope {
        Envelope {
            client_name: "client.example.net".into(),
            client_addr: "203.0.113.9:52000".parse().unwrap(),
            helo: "laptop".into(),
            mail_from: "<alice@example.com>".into(),
            rcpt_to: vec!["<bob@example.org>".into()],
            auth: Some(user.into()),
            daemon_name: "mx.example.com".into(),
            queue_id: "4SUBMIT0001".into(),
        }
    }
}

/// What the milter did with a message.
#[derive(Debug)]
pub struct Outcome {
    /// The stage that ended the exchange ("eoh", "eom", ...).
    pub stage: &'static str,
    pub status: Status,
    pub actions: Vec<EomAction>,
    /// The message after the milter's header edits, CRLF.
    pub message: Vec<u8>,
}

impl Outcome {
    pub fn inserted(&self, name: &str) -> Vec<String> {
        self.actions
            .iter()
            .filter_map(|a| match a {
                EomAction::InsertHeader { name: n, value, .. }
                    if n.to_bytes().eq_ignore_ascii_case(name.as_bytes()) =>
                {
                    Some(value.to_string_lossy().into_owned())
                }
                _ => None,
            })
            .collect()
    }
}

/// Split a CRLF message into header fields (name, value with leading
/// space and "\n" folding) and body.
pub fn split_message(raw: &[u8]) -> (Fields, Vec<u8>) {
    let (head, body) = match raw.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => (&raw[..i + 2], &raw[i + 4..]),
        None => (raw, &b""[..]),
    };
    let mut fields: Fields = Vec::new();
    for line in head.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        // A continuation line; one that starts the header section keeps its
        // whitespace as part of a field name instead.
        if matches!(line[0], b' ' | b'\t')
            && let Some(last) = fields.last_mut()
        {
            last.1.push(b'\n');
            last.1.extend_from_slice(line);
            continue;
        }
        match line.iter().position(|&b| b == b':') {
            Some(colon) => fields.push((line[..colon].to_vec(), line[colon + 1..].to_vec())),
            None => fields.push((line.to_vec(), Vec::new())),
        }
    }
    (fields, body.to_vec())
}

/// Join header fields and body back into a CRLF message.
pub fn join_message(fields: &[(Vec<u8>, Vec<u8>)], body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(name);
        out.push(b':');
        for &b in value {
            if b == b'\n' {
                out.push(b'\r');
            }
            out.push(b);
        }
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(body);
    out
}

/// Apply the milter's header edits (Postfix semantics: insert index 0 is
/// the top; change/delete index is the nth field of that name, from 1).
pub fn apply_actions(mut fields: Fields, body: &[u8], actions: &[EomAction]) -> Vec<u8> {
    for action in actions {
        match action {
            EomAction::InsertHeader { index, name, value } => {
                let at = (*index as usize).min(fields.len());
                fields.insert(at, (name.as_bytes().to_vec(), value.as_bytes().to_vec()));
            }
            EomAction::AddHeader { name, value } => {
                fields.push((name.as_bytes().to_vec(), value.as_bytes().to_vec()));
            }
            EomAction::ChangeHeader { name, index, value } => {
                if let Some(pos) = nth_named(&fields, name.as_bytes(), *index) {
                    fields[pos].1 = value.as_bytes().to_vec();
                }
            }
            EomAction::DeleteHeader { name, index } => {
                if let Some(pos) = nth_named(&fields, name.as_bytes(), *index) {
                    fields.remove(pos);
                }
            }
            _ => {}
        }
    }
    join_message(&fields, body)
}

fn nth_named(fields: &[(Vec<u8>, Vec<u8>)], name: &[u8], index: i32) -> Option<usize> {
    fields
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| n.eq_ignore_ascii_case(name))
        .nth((index.max(1) - 1) as usize)
        .map(|(i, _)| i)
}

/// Open a connection configured as Postfix does (all actions and options
/// offered, exact leading space).
pub async fn open(addr: SocketAddr) -> TestConnection {
    TestConnection::configure()
        .exact_leading_space(true)
        .read_timeout(Duration::from_secs(20))
        .open_tcp(addr)
        .await
        .expect("connect to milter")
}

/// Send one message on an open connection (starting at MAIL) and collect
/// the outcome.
pub async fn send_message(conn: &mut TestConnection, env: &Envelope, raw: &[u8]) -> Outcome {
    let (fields, body) = split_message(raw);
    let done = |stage, status| Outcome {
        stage,
        status,
        actions: Vec::new(),
        message: raw.to_vec(),
    };
    let mut mail_macros = vec![(
        "{mail_addr}",
        env.mail_from.trim_matches(['<', '>']).to_string(),
    )];
    if let Some(user) = &env.auth {
        mail_macros.push(("{auth_authen}", user.clone()));
        mail_macros.push(("{auth_type}", "PLAIN".to_string()));
    }
    let opts = conn.negotiated_opts();
    conn.macros(MacroStage::Mail, mail_macros).await.unwrap();
    if !opts.contains(ProtoOpts::NO_MAIL) {
        let status = conn.mail([env.mail_from.as_str()]).await.unwrap();
        if !matches!(status, Status::Continue | Status::Noreply) {
            return done("mail", status);
        }
    }
    for rcpt in &env.rcpt_to {
        conn.macros(
            MacroStage::Rcpt,
            [("{rcpt_addr}", rcpt.trim_matches(['<', '>']))],
        )
        .await
        .unwrap();
        if !opts.contains(ProtoOpts::NO_RCPT) {
            let status = conn.rcpt([rcpt.as_str()]).await.unwrap();
            if !matches!(status, Status::Continue | Status::Noreply) {
                return done("rcpt", status);
            }
        }
    }
    conn.macros(MacroStage::Data, [("i", env.queue_id.as_str())])
        .await
        .unwrap();
    if !opts.contains(ProtoOpts::NO_DATA) {
        let status = conn.data().await.unwrap();
        if !matches!(status, Status::Continue | Status::Noreply) {
            return done("data", status);
        }
    }
    for (name, value) in &fields {
        let status = conn
            .header(
                std::ffi::CString::new(name.clone()).expect("NUL in header name"),
                std::ffi::CString::new(value.clone()).expect("NUL in header value"),
            )
            .await
            .unwrap_or_else(|e| panic!("header {:?}: {e}", String::from_utf8_lossy(name)));
        if !matches!(status, Status::Continue | Status::Noreply) {
            return done("header", status);
        }
    }
    conn.macros(MacroStage::Eoh, [("i", env.queue_id.as_str())])
        .await
        .unwrap();
    // rmilter answers end of headers only when the MTA does not offer
    // SMFIP_NR_EOH; otherwise a decision taken there comes at end of message.
    let status = conn.eoh().await.unwrap();
    if !matches!(status, Status::Continue | Status::Noreply) {
        return done("eoh", status);
    }
    for chunk in body.chunks(65535) {
        // A milter that negotiated SMFIP_NOBODY (OpenDMARC) gets no body, as from Postfix.
        let status = match conn.body(chunk.to_vec()).await {
            Ok(status) => status,
            Err(indymilter_test::TestError::MilterUsage) => break,
            Err(e) => panic!("body: {e}"),
        };
        if !matches!(status, Status::Continue | Status::Noreply) {
            return done("body", status);
        }
    }
    conn.macros(MacroStage::Eom, [("i", env.queue_id.as_str())])
        .await
        .unwrap();
    let (actions, status) = conn.eom().await.unwrap();
    let message = apply_actions(fields, &body, &actions.actions);
    Outcome {
        stage: "eom",
        status,
        actions: actions.actions,
        message,
    }
}

/// Connect as `env`'s client, send one message, close.
pub async fn drive(addr: SocketAddr, env: &Envelope, raw: &[u8]) -> Outcome {
    let mut conn = open(addr).await;
    connect(&mut conn, env).await;
    let outcome = send_message(&mut conn, env, raw).await;
    conn.close().await.unwrap();
    outcome
}

/// The CONNECT and HELO stages with their macros.
pub async fn connect(conn: &mut TestConnection, env: &Envelope) {
    conn.macros(
        MacroStage::Connect,
        [
            ("j", "mx.example.org".to_string()),
            ("{daemon_name}", env.daemon_name.clone()),
            ("{client_addr}", env.client_addr.ip().to_string()),
            ("{client_name}", env.client_name.clone()),
        ],
    )
    .await
    .unwrap();
    let opts = conn.negotiated_opts();
    if !opts.contains(ProtoOpts::NO_CONNECT) {
        let status = conn
            .connect(env.client_name.as_str(), env.client_addr)
            .await
            .unwrap();
        assert!(
            matches!(status, Status::Continue | Status::Noreply),
            "connect: {status:?}"
        );
    }
    if !opts.contains(ProtoOpts::NO_HELO) {
        let status = conn.helo(env.helo.as_str()).await.unwrap();
        assert!(
            matches!(status, Status::Continue | Status::Noreply),
            "helo: {status:?}"
        );
    }
}
