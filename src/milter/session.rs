//! One milter connection: the client it describes (connection scope) and
//! the message in progress (message scope, reset at MAIL and on abort).
//!
//! Every stage returns a [`Reply`]; every failure becomes the configured
//! action with a log line carrying the queue id.

use super::MilterState;
use super::inbound;
use super::message::{Client, Header, MAX_RCPT, Message, client_text, header_block};
use super::reply::{EomPlan, Failure, Reply, act, outcome};
use super::spool::Spool;
use crate::config::Action;
use crate::identity;
use crate::sign::logins::LoginVerdict;
use crate::sign::{self, MessageSigner};
use crate::verify::authres;
use indymilter::Macros;
use std::ffi::CString;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tracing::{debug, info, warn};

use super::direction::{ClientFacts, Direction};

/// The state of one milter connection.
pub struct Session {
    state: Arc<MilterState>,
    leading_space: bool,
    noreply: NoReply,
    client: Client,
    message: Option<Message>,
    /// With no reply at end of headers (SMFIP_NR_EOH), a decision taken
    /// there that ends the message (accept unsigned, reject, tempfail)
    /// waits here for end of message, the next stage that has an answer;
    /// the body in between is ignored.
    decided: Option<Reply>,
    /// Queue id of the last message, for log lines after it ended.
    last_queue_id: String,
}

const NOQUEUE: &str = "NOQUEUE";

/// The stages the MTA agreed to send without waiting for an answer
/// (SMFIP_NR_*). rmilter never refuses at these stages, except at end of
/// headers, whose decision then waits for end of message. Each skipped
/// answer is a round trip saved per message (per body chunk, per field).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoReply {
    pub connect: bool,
    pub helo: bool,
    pub mail: bool,
    pub header: bool,
    pub eoh: bool,
    pub body: bool,
    pub rcpt: bool,
}

fn continue_or_noreply(noreply: bool) -> Reply {
    if noreply {
        Reply::Noreply
    } else {
        Reply::Continue
    }
}

impl Session {
    pub fn new(state: Arc<MilterState>, leading_space: bool, noreply: NoReply) -> Self {
        Session {
            state,
            leading_space,
            noreply,
            client: Client::default(),
            message: None,
            decided: None,
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
        self.decided = None;
        continue_or_noreply(self.noreply.connect)
    }

    pub fn helo(&mut self, name: &str) -> Reply {
        self.client.helo = name.to_string();
        continue_or_noreply(self.noreply.helo)
    }

    /// MAIL starts a new message: its state is created here from the
    /// current runtime and nothing of an earlier message survives.
    pub fn mail(&mut self, sender: &str, macros: &impl MacroSource) -> Reply {
        let auth_user = macro_value(macros, "{auth_authen}").filter(|v| !v.is_empty());
        self.decided = None;
        self.message = Some(Message {
            runtime: self.state.runtime(),
            _in_flight: self.state.begin_message(),
            queue_id: NOQUEUE.to_string(),
            sender: sender
                .trim_start_matches('<')
                .trim_end_matches('>')
                .to_string(),
            rcpt_to: Vec::new(),
            auth_user,
            daemon_name: macro_value(macros, "{daemon_name}"),
            headers: Vec::new(),
            header_bytes: 0,
            headers_too_big: false,
            signer: None,
            author_domain: String::new(),
            direction: Direction::Inbound,
            forged_results: Vec::new(),
            results_seen: 0,
            author: None,
            refusal: None,
            spool: None,
            truncated: false,
            spool_error: None,
            hold: None,
            headers_done: false,
        });
        continue_or_noreply(self.noreply.mail)
    }

    /// RCPT (only negotiated with `[report.failure] include_rcpt_to`).
    pub fn rcpt(&mut self, rcpt: &str) -> Reply {
        if let Some(msg) = self.message.as_mut()
            && msg.rcpt_to.len() < MAX_RCPT
        {
            msg.rcpt_to.push(
                rcpt.trim_start_matches('<')
                    .trim_end_matches('>')
                    .to_string(),
            );
        }
        continue_or_noreply(self.noreply.rcpt)
    }

    pub fn header(&mut self, name: &[u8], value: &[u8]) -> Reply {
        if let Some(msg) = self.message.as_mut() {
            if name
                .trim_ascii_end()
                .eq_ignore_ascii_case(b"authentication-results")
            {
                // Postfix numbers fields per name from 1 (SMFIR_CHGHEADER).
                msg.results_seen += 1;
                // RFC 8601 §5: fields with our authserv-id are forged. So
                // are look-alikes of it and fields whose id cannot be read
                // or holds control or non-ASCII characters: another reader
                // might find our id in them (see authres::forged).
                let ours = &msg.runtime.config.authserv_id;
                if let Some(why) = authres::forged(value, ours) {
                    debug!(
                        index = msg.results_seen,
                        reason = why.as_str(),
                        "forged Authentication-Results field"
                    );
                    msg.forged_results.push(msg.results_seen);
                }
            }
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
        continue_or_noreply(self.noreply.header)
    }

    /// End of headers: decide the direction, run the From gate, then
    /// either choose the keys and start signing (outbound) or start
    /// collecting the message for verification (inbound).
    ///
    /// Without an answer at this stage (SMFIP_NR_EOH), a decision that ends
    /// the message is kept for end of message: Postfix then sends headers,
    /// body and end of message without waiting, one round trip less per
    /// message. A refusal reaches the SMTP client the same way either way,
    /// after the final dot; only an unsigned outbound message's body is
    /// sent in vain.
    pub fn eoh(&mut self, macros: &impl MacroSource) -> Reply {
        let reply = self.eoh_stage(macros);
        if reply == Reply::Continue {
            return continue_or_noreply(self.noreply.eoh);
        }
        // An answer other than continue ends the message here.
        if let Some(msg) = self.message.as_ref() {
            self.state
                .metrics()
                .message(msg.direction.is_outbound(), outcome(&reply, false));
        }
        if self.noreply.eoh {
            self.message = None;
            self.decided = Some(reply);
            return Reply::Noreply;
        }
        reply
    }

    fn eoh_stage(&mut self, macros: &impl MacroSource) -> Reply {
        let direction = self.direction(macros);
        let metrics = self.state.metrics().clone();
        let leading_space = self.leading_space;
        let client = client_text(&self.client);
        let Some(msg) = self.message.as_mut() else {
            return Reply::Continue;
        };
        if let Some(id) = macro_value(macros, "i").filter(|v| !v.is_empty()) {
            msg.queue_id = id;
        }
        self.last_queue_id.clone_from(&msg.queue_id);
        msg.direction = direction;
        msg.headers_done = true;
        let config = &msg.runtime.config;
        if msg.headers_too_big {
            warn!(
                queue_id = %msg.queue_id,
                max_headers = config.limits.max_headers,
                max_header_bytes = config.limits.max_header_bytes,
                action = config.actions.oversized_headers.as_str(),
                "header section exceeds the configured limits"
            );
            metrics.action(config.actions.oversized_headers, "oversized_headers");
            if config.actions.oversized_headers == Action::Quarantine {
                msg.hold = Some("rmilter: message header section too big".to_string());
            }
            // Accepted, it still goes on to end of message when forged
            // Authentication-Results must be deleted, or (inbound) when it
            // must be marked as not verified: Postfix applies header edits
            // only there.
            if config.actions.oversized_headers == Action::Accept
                && (!msg.forged_results.is_empty() || !direction.is_outbound())
            {
                return Reply::Continue;
            }
            return act(config.actions.oversized_headers, Failure::HeadersTooBig);
        }
        let gate = identity::author(msg.headers.iter().map(|h| (&h.name[..], &h.value[..])));
        if !direction.is_outbound() {
            return match gate {
                Ok(author) => {
                    let limits = &config.limits;
                    let mut block = header_block(&msg.headers, leading_space);
                    block.extend_from_slice(b"\r\n");
                    let mut spool = Spool::new(limits.memory_bytes);
                    if let Err(e) = spool.write(&block, limits.spool_dir.as_deref()) {
                        msg.spool_error = Some(e.to_string());
                    }
                    msg.spool = Some(spool);
                    msg.author = Some(author);
                    Reply::Continue
                }
                Err(refusal) => {
                    let action = config.actions.bad_from;
                    metrics.action(action, "bad_from");
                    warn!(
                        queue_id = %msg.queue_id,
                        client = %client,
                        direction = direction.as_str(),
                        reason = %refusal,
                        action = action.as_str(),
                        "From gate refused the message; DMARC cannot be evaluated"
                    );
                    match action {
                        Action::Reject | Action::Tempfail => act(action, Failure::BadFrom(refusal)),
                        // Accepted or held: it still gets dmarc=permerror.
                        Action::Accept | Action::Quarantine => {
                            msg.refusal = Some(refusal);
                            Reply::Continue
                        }
                    }
                }
            };
        }
        let author = match gate {
            Ok(author) => author,
            Err(refusal) => {
                metrics.action(config.actions.bad_from, "bad_from");
                warn!(
                    queue_id = %msg.queue_id,
                    direction = direction.as_str(),
                    reason = %refusal,
                    action = config.actions.bad_from.as_str(),
                    "From gate refused the message; not signed"
                );
                return match config.actions.bad_from {
                    Action::Quarantine => {
                        msg.hold = Some(format!("rmilter: {refusal}"));
                        Reply::Continue
                    }
                    Action::Accept if !msg.forged_results.is_empty() => Reply::Continue,
                    action => act(action, Failure::BadFrom(refusal)),
                };
            }
        };
        let choice =
            msg.runtime
                .keys
                .choose(&author.address, &author.domain, config.signing.subdomains);
        if choice.keys.is_empty() {
            info!(
                queue_id = %msg.queue_id,
                direction = direction.as_str(),
                from_domain = %author.domain,
                rules = %choice.matched.join(", "),
                "{}",
                if choice.by_rules {
                    "no signing rule gives a key for the sender; not signed"
                } else {
                    "no signing key for the author domain; not signed"
                }
            );
            return if msg.forged_results.is_empty() {
                Reply::Accept
            } else {
                Reply::Continue
            };
        }
        // [signing.logins]: a SASL login has mail signed only for senders it
        // may use; mail no key would sign is not its concern.
        let login = msg
            .auth_user
            .clone()
            .or_else(|| macro_value(macros, "{auth_authen}").filter(|v| !v.is_empty()));
        if let Some(login) = login.as_deref()
            && msg.runtime.logins.enabled()
            && let LoginVerdict::Refused(why) = msg.runtime.logins.check(login, &author.address)
        {
            let action = config.signing.logins.action;
            metrics
                .signing_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            metrics.action(action, "login");
            warn!(
                queue_id = %msg.queue_id,
                client = %client,
                login,
                from = %author.address,
                reason = %why,
                action = action.as_str(),
                "login may not send as the From address; not signed"
            );
            return match action {
                Action::Quarantine => {
                    msg.hold = Some(format!("rmilter: {why}"));
                    Reply::Continue
                }
                Action::Accept if !msg.forged_results.is_empty() => Reply::Continue,
                action => act(
                    action,
                    Failure::LoginRefused(login.to_string(), author.address),
                ),
            };
        }
        let keys = &choice.keys;
        let names = sign::header_list(&config.signing, msg.headers.iter().map(|h| &h.name[..]));
        let block = header_block(&msg.headers, leading_space);
        msg.signer = Some(MessageSigner::start(keys, &names, &config.signing, &block));
        msg.author_domain = author.domain;
        debug!(queue_id = %msg.queue_id, keys = keys.len(), "signing started");
        Reply::Continue
    }

    pub fn body(&mut self, chunk: &[u8]) -> Reply {
        let reply = continue_or_noreply(self.noreply.body);
        let Some(msg) = self.message.as_mut() else {
            return reply;
        };
        if let Some(signer) = msg.signer.as_mut() {
            signer.body(chunk);
        }
        if let Some(spool) = msg.spool.as_mut() {
            let limits = &msg.runtime.config.limits;
            if spool.len() + chunk.len() > limits.max_message_bytes {
                // Beyond the cap DKIM becomes a temperror; DMARC still runs.
                msg.truncated = true;
            } else if !msg.truncated
                && msg.spool_error.is_none()
                && let Err(e) = spool.write(chunk, limits.spool_dir.as_deref())
            {
                msg.spool_error = Some(e.to_string());
            }
        }
        reply
    }

    /// End of message: finish the signatures (outbound) or verify and
    /// decide (inbound). Returns the header edits, quarantine and reply.
    pub async fn eom(&mut self, macros: &impl MacroSource) -> EomPlan {
        if let Some(reply) = self.decided.take() {
            return EomPlan::reply(reply);
        }
        // A peer that skips end-of-headers still gets the From gate and a
        // direction: nothing reaches end of message undecided.
        // A message accepted there still has its forged fields deleted
        // below; only a refused one ends here.
        if self.message.as_ref().is_some_and(|m| !m.headers_done) {
            let reply = self.eoh_stage(macros);
            if matches!(reply, Reply::Reject { .. } | Reply::Tempfail { .. }) {
                if let Some(msg) = self.message.take() {
                    self.state
                        .metrics()
                        .message(msg.direction.is_outbound(), outcome(&reply, false));
                }
                return EomPlan::reply(reply);
            }
        }
        let Some(mut msg) = self.message.take() else {
            return EomPlan::reply(Reply::Continue);
        };
        if let Some(id) = macro_value(macros, "i").filter(|v| !v.is_empty()) {
            msg.queue_id = id;
        }
        self.last_queue_id.clone_from(&msg.queue_id);
        let mut plan = EomPlan::reply(Reply::Continue);
        // RFC 8601 §5: remove every field claiming to be from us, highest
        // index first (Postfix renumbers after each deletion; deleting in
        // order let every second forgery survive, CVE-2022-48521).
        for index in msg.forged_results.iter().rev() {
            plan.delete.push(("Authentication-Results", *index));
        }
        if !msg.forged_results.is_empty() {
            warn!(queue_id = %msg.queue_id, count = msg.forged_results.len(), "removing forged Authentication-Results fields");
        }
        let outbound = msg.direction.is_outbound();
        if msg.headers_too_big && !outbound {
            // Nothing was verified: say so, never leave the message bare.
            plan.insert.push((
                "Authentication-Results",
                inbound::not_verified(
                    &msg.runtime.config,
                    "header section over the configured limits",
                ),
            ));
        }
        let plan = if let Some(reason) = msg.hold.take() {
            plan.quarantine = Some(reason);
            info!(queue_id = %msg.queue_id, "message held in the quarantine (hold) queue");
            plan
        } else if outbound {
            self.finish_outbound(msg, plan)
        } else {
            let client = self.client.clone();
            inbound::finish(&self.state, &client, msg, plan).await
        };
        self.state
            .metrics()
            .message(outbound, outcome(&plan.reply, plan.quarantine.is_some()));
        plan
    }

    fn finish_outbound(&self, mut msg: Message, mut plan: EomPlan) -> EomPlan {
        let config = &msg.runtime.config;
        let Some(signer) = msg.signer.take() else {
            return plan;
        };
        match signer.finish() {
            Ok(signatures) => {
                if !signatures.is_empty() {
                    self.state
                        .metrics()
                        .signed_messages
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                for sig in &signatures {
                    msg.runtime
                        .key_counters
                        .signed(&sig.key_domain, &sig.selector);
                    let value = if self.leading_space {
                        sig.value.clone()
                    } else {
                        sig.value.trim_start().to_string()
                    };
                    plan.insert.push(("DKIM-Signature", value));
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
                plan
            }
            // The planned deletions (forged Authentication-Results) stay, and
            // a quarantine action holds the message, as on every other path.
            Err(e) => {
                plan.internal_error(
                    self.state.metrics(),
                    config.actions.on_error,
                    &msg.queue_id,
                    &e.to_string(),
                    "rmilter: message could not be signed",
                );
                plan
            }
        }
    }

    pub fn abort(&mut self) {
        self.decided = None;
        if let Some(msg) = self.message.take() {
            debug!(queue_id = %msg.queue_id, "message aborted");
        }
    }

    pub fn close(&mut self) {
        self.message = None;
        self.decided = None;
    }

    /// The reply when the end-of-message edits could not be applied.
    /// `on_error = "quarantine"` cannot hold the message then (the
    /// quarantine request is one of those edits, and quarantine's reply is
    /// continue): it is refused temporarily instead of delivered unheld.
    pub fn on_error_reply(&self) -> Reply {
        let action = match self.state.runtime().config.actions.on_error {
            Action::Quarantine => Action::Tempfail,
            action => action,
        };
        act(action, Failure::Internal)
    }

    fn direction(&self, macros: &impl MacroSource) -> Direction {
        let Some(msg) = self.message.as_ref() else {
            return Direction::Inbound;
        };
        let auth = msg
            .auth_user
            .clone()
            .or_else(|| macro_value(macros, "{auth_authen}").filter(|v| !v.is_empty()));
        let ip: Option<IpAddr> = self
            .client
            .addr
            .map(|a| a.ip())
            .or_else(|| macro_value(macros, "{client_addr}").and_then(|v| v.parse().ok()));
        let daemon_name = msg
            .daemon_name
            .clone()
            .or_else(|| macro_value(macros, "{daemon_name}"));
        let facts = ClientFacts {
            auth_user: auth.as_deref(),
            local_submission: self.client.is_local_submission(),
            ip,
            daemon_name: daemon_name.as_deref(),
        };
        Direction::decide(&msg.runtime.config.outbound, &facts)
    }
}

/// Where a stage's macros come from: indymilter's [`Macros`] (and a plain
/// map in the unit tests, which cannot make one).
pub trait MacroSource {
    fn value(&self, name: &str) -> Option<String>;
}

impl MacroSource for Macros {
    fn value(&self, name: &str) -> Option<String> {
        let name = CString::new(name).ok()?;
        self.get(&name)
            .map(|v| v.to_string_lossy().trim().to_string())
    }
}

fn macro_value(macros: &impl MacroSource, name: &str) -> Option<String> {
    macros.value(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, Overrides, Source};
    use crate::runtime::Runtime;
    use std::collections::HashMap;

    type Map = HashMap<&'static str, &'static str>;

    impl MacroSource for Map {
        fn value(&self, name: &str) -> Option<String> {
            self.get(name).map(|v| v.to_string())
        }
    }

    fn session(toml: &str) -> Session {
        let text = format!(
            "authserv_id = \"mx.example.org\"\n{toml}\n[dns]\nnameservers = [\"127.0.0.1:9\"]\ntimeout = \"500ms\"\nattempts = 1\n"
        );
        let config = config::from_text(Source::Embedded, &text, &Overrides::default()).unwrap();
        let runtime = Runtime::from_config(config).unwrap();
        Session::new(MilterState::new(runtime), true, NoReply::default())
    }

    /// MAIL, the header fields (a forged and a foreign
    /// Authentication-Results first), a body, then end of message without
    /// end of headers.
    async fn without_eoh(session: &mut Session, macros: &Map, from: &str) -> EomPlan {
        session.connect("client.example", Some("203.0.113.9:5000".parse().unwrap()));
        session.mail("<alice@example.com>", macros);
        session.header(b"Authentication-Results", b" mx.example.org; dmarc=pass");
        session.header(b"Authentication-Results", b" upstream.example; spf=pass");
        session.header(b"From", format!(" {from}").as_bytes());
        for i in 0..20 {
            session.header(format!("X-Filler-{i}").as_bytes(), b" x");
        }
        session.body(b"body\r\n");
        session.eom(macros).await
    }

    #[tokio::test]
    async fn end_of_message_without_end_of_headers_deletes_forged_fields() {
        let outbound: Map = [("{auth_authen}", "alice"), ("i", "Q1")].into();
        let inbound: Map = [("i", "Q2")].into();
        let oversized = "[limits]\nmax_headers = 10\n[actions]\noversized_headers = \"accept\"\n";
        for (toml, macros, from, inserted) in [
            // Accepted: the header section is too big.
            (oversized, &outbound, "alice@example.com", 0),
            (oversized, &inbound, "alice@example.com", 1),
            // Outbound without a key for the author domain.
            ("", &outbound, "carol@other.example", 0),
            // Outbound, From refused and accepted by configuration.
            (
                "[actions]\nbad_from = \"accept\"\n",
                &outbound,
                "a@example.com, b@example.com",
                0,
            ),
        ] {
            let mut s = session(toml);
            let plan = without_eoh(&mut s, macros, from).await;
            assert!(
                matches!(plan.reply, Reply::Continue | Reply::Accept),
                "{toml} {from}: {:?}",
                plan.reply
            );
            assert_eq!(
                plan.delete,
                [("Authentication-Results", 1)],
                "{toml} {from}"
            );
            assert_eq!(plan.insert.len(), inserted, "{toml} {from}");
            if inserted > 0 {
                assert!(
                    plan.insert[0].1.contains("dmarc=permerror"),
                    "{:?}",
                    plan.insert
                );
            }
        }
        // Refused: nothing to delete, the reply says no.
        let mut s = session("[limits]\nmax_headers = 10\n");
        let plan = without_eoh(&mut s, &outbound, "alice@example.com").await;
        assert!(
            matches!(plan.reply, Reply::Reject { .. }),
            "{:?}",
            plan.reply
        );
        assert!(plan.delete.is_empty());
    }

    /// When the end-of-message edits fail, quarantine cannot hold the
    /// message: it is refused temporarily, never passed on unheld.
    #[test]
    fn edits_that_fail_under_quarantine_are_tempfailed() {
        let s = session("[actions]\non_error = \"quarantine\"\n");
        assert!(matches!(s.on_error_reply(), Reply::Tempfail { .. }));
        let s = session("[actions]\non_error = \"accept\"\n");
        assert_eq!(s.on_error_reply(), Reply::Accept);
    }
}
