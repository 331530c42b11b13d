//! One milter connection: the client it describes (connection scope) and
//! the message in progress (message scope, reset at MAIL and on abort).
//!
//! Every stage returns a [`Reply`]; every failure becomes the configured
//! action with a log line carrying the queue id.

use super::{InFlight, MilterState};
use crate::config::Action;
use crate::identity::{self, Refusal};
use crate::runtime::Runtime;
use crate::sign::{self, MessageSigner};
use indymilter::Macros;
use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tracing::{debug, info, warn};

/// The answer of one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Continue,
    /// Accept the message; the MTA sends nothing more of it.
    Accept,
    /// No answer (negotiated for header fields).
    Noreply,
    Reject {
        code: &'static str,
        xcode: &'static str,
        text: String,
    },
    Tempfail {
        code: &'static str,
        xcode: &'static str,
        text: String,
    },
}

/// Which way a message goes, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Outbound: SASL-authenticated client.
    Authenticated,
    /// Outbound: client address in `outbound.networks`.
    InternalNetwork,
    /// Outbound: `{daemon_name}` listed in `outbound.daemon_names`.
    DaemonName,
    /// Outbound: local submission (sendmail(1) through non_smtpd_milters).
    LocalSubmission,
    /// Everything else.
    Inbound,
}

impl Direction {
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Authenticated => "authenticated",
            Direction::InternalNetwork => "internal-network",
            Direction::DaemonName => "daemon-name",
            Direction::LocalSubmission => "local-submission",
            Direction::Inbound => "inbound",
        }
    }

    pub fn is_outbound(self) -> bool {
        self != Direction::Inbound
    }
}

/// The SMTP client as the MTA describes it.
#[derive(Debug, Default)]
struct Client {
    hostname: String,
    addr: Option<SocketAddr>,
    helo: String,
}

impl Client {
    /// Postfix's cleanup(8) simulates non-SMTP mail (sendmail(1), pickup)
    /// as a connection from "localhost" at 127.0.0.1 port 0; a real SMTP
    /// client never has port 0.
    fn is_local_submission(&self) -> bool {
        matches!(self.addr, Some(addr) if addr.port() == 0 && addr.ip().is_loopback())
            && self.hostname.eq_ignore_ascii_case("localhost")
    }
}

/// One header field as received: name without colon, value with its
/// leading space (when negotiated) and "\n" + WSP folding.
struct Header {
    name: Vec<u8>,
    value: Vec<u8>,
}

/// The message in progress.
struct Message {
    runtime: Arc<Runtime>,
    _in_flight: InFlight,
    queue_id: String,
    sender: String,
    auth_user: Option<String>,
    /// `{daemon_name}` as the SMTP server set it. Postfix's cleanup, which
    /// sends the header and body events, reports main.cf's value instead.
    daemon_name: Option<String>,
    headers: Vec<Header>,
    header_bytes: usize,
    headers_too_big: bool,
    signer: Option<MessageSigner>,
    author_domain: String,
    direction: Direction,
}

/// The state of one milter connection.
pub struct Session {
    state: Arc<MilterState>,
    leading_space: bool,
    noreply_header: bool,
    client: Client,
    message: Option<Message>,
    /// Queue id of the last message, for log lines after it ended.
    last_queue_id: String,
}

const NOQUEUE: &str = "NOQUEUE";

impl Session {
    pub fn new(state: Arc<MilterState>, leading_space: bool, noreply_header: bool) -> Self {
        Session {
            state,
            leading_space,
            noreply_header,
            client: Client::default(),
            message: None,
            last_queue_id: NOQUEUE.to_string(),
        }
    }

    pub fn last_queue_id(&self) -> &str {
        &self.last_queue_id
    }

    pub fn connect(&mut self, hostname: &str, addr: Option<SocketAddr>) -> Reply {
        self.client = Client {
            hostname: hostname.to_string(),
            addr,
            helo: String::new(),
        };
        self.message = None;
        Reply::Continue
    }

    pub fn helo(&mut self, name: &str) -> Reply {
        self.client.helo = name.to_string();
        Reply::Continue
    }

    /// MAIL starts a new message: its state is created here from the
    /// current runtime and nothing of an earlier message survives.
    pub fn mail(&mut self, sender: &str, macros: &Macros) -> Reply {
        let auth_user = macro_value(macros, "{auth_authen}").filter(|v| !v.is_empty());
        self.message = Some(Message {
            runtime: self.state.runtime(),
            _in_flight: self.state.begin_message(),
            queue_id: NOQUEUE.to_string(),
            sender: sender
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string(),
            auth_user,
            daemon_name: macro_value(macros, "{daemon_name}"),
            headers: Vec::new(),
            header_bytes: 0,
            headers_too_big: false,
            signer: None,
            author_domain: String::new(),
            direction: Direction::Inbound,
        });
        Reply::Continue
    }

    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Reply {
        if let Some(msg) = self.message.as_mut() {
            let limits = &msg.runtime.config.limits;
            let size = name.len() + value.len() + 3;
            if msg.headers_too_big
                || msg.headers.len() >= limits.max_headers
                || msg.header_bytes + size > limits.max_header_bytes
            {
                // Keep counting, stop storing: memory stays bounded.
                msg.headers_too_big = true;
            } else {
                msg.header_bytes += size;
                msg.headers.push(Header {
                    name: name.to_vec(),
                    value: value.to_vec(),
                });
            }
        }
        if self.noreply_header {
            Reply::Noreply
        } else {
            Reply::Continue
        }
    }

    /// End of headers: decide the direction, run the From gate, choose the
    /// keys and start signing.
    pub fn eoh(&mut self, macros: &Macros) -> Reply {
        let direction = self.direction(macros);
        let leading_space = self.leading_space;
        let Some(msg) = self.message.as_mut() else {
            return Reply::Continue;
        };
        if let Some(id) = macro_value(macros, "i").filter(|v| !v.is_empty()) {
            msg.queue_id = id;
        }
        self.last_queue_id.clone_from(&msg.queue_id);
        msg.direction = direction;
        let config = &msg.runtime.config;
        if msg.headers_too_big {
            warn!(
                queue_id = %msg.queue_id,
                max_headers = config.limits.max_headers,
                max_header_bytes = config.limits.max_header_bytes,
                action = config.actions.oversized_headers.as_str(),
                "header section exceeds the configured limits"
            );
            return act(config.actions.oversized_headers, Failure::HeadersTooBig);
        }
        if !direction.is_outbound() {
            info!(
                queue_id = %msg.queue_id,
                client = %client_text(&self.client),
                direction = direction.as_str(),
                "inbound message passed on unverified"
            );
            return Reply::Accept;
        }
        let author = match identity::author(msg.headers.iter().map(|h| (&h.name[..], &h.value[..])))
        {
            Ok(author) => author,
            Err(refusal) => {
                warn!(
                    queue_id = %msg.queue_id,
                    direction = direction.as_str(),
                    reason = %refusal,
                    action = config.actions.bad_from.as_str(),
                    "From gate refused the message; not signed"
                );
                return act(config.actions.bad_from, Failure::BadFrom(refusal));
            }
        };
        let keys = msg
            .runtime
            .keys
            .select(&author.domain, config.signing.subdomains);
        if keys.is_empty() {
            info!(
                queue_id = %msg.queue_id,
                direction = direction.as_str(),
                from_domain = %author.domain,
                "no signing key for the author domain; not signed"
            );
            return Reply::Accept;
        }
        let names = sign::header_list(&config.signing, msg.headers.iter().map(|h| &h.name[..]));
        let block = header_block(&msg.headers, leading_space);
        msg.signer = Some(MessageSigner::start(keys, &names, &config.signing, &block));
        msg.author_domain = author.domain;
        debug!(queue_id = %msg.queue_id, keys = keys.len(), "signing started");
        Reply::Continue
    }

    pub fn body(&mut self, chunk: &[u8]) -> Reply {
        if let Some(signer) = self.message.as_mut().and_then(|m| m.signer.as_mut()) {
            signer.body(chunk);
        }
        Reply::Continue
    }

    /// End of message: finish the signatures. Returns the header fields to
    /// insert at the top of the message and the reply.
    pub fn eom(&mut self, macros: &Macros) -> (Vec<(CString, CString)>, Reply) {
        let Some(mut msg) = self.message.take() else {
            return (Vec::new(), Reply::Continue);
        };
        if let Some(id) = macro_value(macros, "i").filter(|v| !v.is_empty()) {
            msg.queue_id = id;
        }
        self.last_queue_id.clone_from(&msg.queue_id);
        let Some(signer) = msg.signer.take() else {
            return (Vec::new(), Reply::Continue);
        };
        let config = &msg.runtime.config;
        match signer.finish() {
            Ok(signatures) => {
                let mut fields = Vec::with_capacity(signatures.len());
                for sig in &signatures {
                    let value = if self.leading_space {
                        sig.value.clone()
                    } else {
                        sig.value.trim_start().to_string()
                    };
                    match (CString::new("DKIM-Signature"), CString::new(value)) {
                        (Ok(name), Ok(value)) => fields.push((name, value)),
                        _ => {
                            return (
                                Vec::new(),
                                internal_error(
                                    config.actions.on_error,
                                    &msg.queue_id,
                                    "signature text contains NUL",
                                ),
                            );
                        }
                    }
                }
                info!(
                    queue_id = %msg.queue_id,
                    direction = msg.direction.as_str(),
                    auth = msg.auth_user.as_deref().unwrap_or(""),
                    sender = %msg.sender,
                    from_domain = %msg.author_domain,
                    signatures = %signatures
                        .iter()
                        .map(|s| format!("d={} s={} a={}", s.domain, s.selector, s.algorithm))
                        .collect::<Vec<_>>()
                        .join(", "),
                    "message signed"
                );
                (fields, Reply::Continue)
            }
            Err(e) => (
                Vec::new(),
                internal_error(config.actions.on_error, &msg.queue_id, &e.to_string()),
            ),
        }
    }

    pub fn abort(&mut self) {
        if let Some(msg) = self.message.take() {
            debug!(queue_id = %msg.queue_id, "message aborted");
        }
    }

    pub fn close(&mut self) {
        self.message = None;
    }

    /// The reply for an internal error after the message ended.
    pub fn on_error_reply(&self) -> Reply {
        act(
            self.state.runtime().config.actions.on_error,
            Failure::Internal,
        )
    }

    fn direction(&self, macros: &Macros) -> Direction {
        let Some(msg) = self.message.as_ref() else {
            return Direction::Inbound;
        };
        let rules = &msg.runtime.config.outbound;
        let auth = msg
            .auth_user
            .clone()
            .or_else(|| macro_value(macros, "{auth_authen}").filter(|v| !v.is_empty()));
        if rules.authenticated && auth.is_some() {
            return Direction::Authenticated;
        }
        if rules.local_submission && self.client.is_local_submission() {
            return Direction::LocalSubmission;
        }
        let ip: Option<IpAddr> = self
            .client
            .addr
            .map(|a| a.ip())
            .or_else(|| macro_value(macros, "{client_addr}").and_then(|v| v.parse().ok()));
        if let Some(ip) = ip {
            let ip = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            if rules.networks.iter().any(|net| net.contains(&ip)) {
                return Direction::InternalNetwork;
            }
        }
        if let Some(name) = msg
            .daemon_name
            .clone()
            .or_else(|| macro_value(macros, "{daemon_name}"))
            && rules.daemon_names.contains(&name)
        {
            return Direction::DaemonName;
        }
        Direction::Inbound
    }
}

enum Failure {
    BadFrom(Refusal),
    HeadersTooBig,
    Internal,
}

fn internal_error(action: Action, queue_id: &str, reason: &str) -> Reply {
    tracing::error!(queue_id, reason, action = action.as_str(), "internal error");
    act(action, Failure::Internal)
}

/// The reply for a configured action.
fn act(action: Action, failure: Failure) -> Reply {
    match (action, failure) {
        (Action::Accept, _) => Reply::Accept,
        (Action::Reject, Failure::BadFrom(refusal)) => Reply::Reject {
            code: "550",
            xcode: "5.7.1",
            text: bad_from_text(&refusal),
        },
        (Action::Tempfail, Failure::BadFrom(refusal)) => Reply::Tempfail {
            code: "451",
            xcode: "4.7.1",
            text: bad_from_text(&refusal),
        },
        (Action::Reject, Failure::HeadersTooBig) => Reply::Reject {
            code: "552",
            xcode: "5.3.4",
            text: "message header section too big".to_string(),
        },
        (Action::Tempfail, Failure::HeadersTooBig) => Reply::Tempfail {
            code: "452",
            xcode: "4.3.4",
            text: "message header section too big".to_string(),
        },
        (Action::Reject, Failure::Internal) => Reply::Reject {
            code: "554",
            xcode: "5.3.0",
            text: "message could not be processed".to_string(),
        },
        (Action::Tempfail, Failure::Internal) => Reply::Tempfail {
            code: "451",
            xcode: "4.3.0",
            text: "temporary local problem, try again later".to_string(),
        },
    }
}

fn bad_from_text(refusal: &Refusal) -> String {
    let mut text = format!(
        "message refused: {refusal}; a message must have exactly one From field with one address (RFC 5322 3.6.2)"
    );
    // SMTP reply lines stay short and free of line breaks.
    text.retain(|c| c != '\r' && c != '\n');
    if text.len() > 400 {
        let mut cut = 400;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

/// The header section in wire form for the signer: `Name:value\r\n` per
/// field, with the milter's "\n" line breaks turned back into CRLF.
fn header_block(headers: &[Header], leading_space: bool) -> Vec<u8> {
    let size: usize = headers
        .iter()
        .map(|h| h.name.len() + h.value.len() + 8)
        .sum();
    let mut block = Vec::with_capacity(size);
    for h in headers {
        block.extend_from_slice(&h.name);
        block.push(b':');
        if !leading_space {
            block.push(b' ');
        }
        let mut prev = 0u8;
        for &b in &h.value {
            if b == b'\n' && prev != b'\r' {
                block.push(b'\r');
            }
            block.push(b);
            prev = b;
        }
        block.extend_from_slice(b"\r\n");
    }
    block
}

fn macro_value(macros: &Macros, name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    macros
        .get(&name)
        .map(|v| v.to_string_lossy().trim().to_string())
}

fn client_text(client: &Client) -> String {
    match client.addr {
        Some(addr) => format!("{}[{}]", client.hostname, addr.ip()),
        None => client.hostname.clone(),
    }
}
