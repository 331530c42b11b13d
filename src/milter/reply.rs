//! What a stage answers: the reply, the edits of end of message, and the
//! configured action's reply for each kind of failure.

use crate::config::Action;
use crate::identity::Refusal;

/// What end of message does: header edits (applied in this order:
/// deletions, then insertions at the top), quarantine, and the reply.
#[derive(Debug, Default)]
pub struct EomPlan {
    /// (field name, per-name index from 1), highest index first.
    pub delete: Vec<(&'static str, i32)>,
    /// Fields inserted at index 0, in this order.
    pub insert: Vec<(&'static str, String)>,
    /// Hold-queue reason (SMFIR_QUARANTINE).
    pub quarantine: Option<String>,
    pub reply: Reply,
}

impl EomPlan {
    pub fn reply(reply: Reply) -> Self {
        EomPlan {
            reply,
            ..Default::default()
        }
    }

    /// End of message failed inside rmilter: log it, count it, and answer
    /// with `actions.on_error` (`action`). With quarantine the message is
    /// held with `hold` as the reason; the planned deletions of forged
    /// Authentication-Results fields stay either way.
    pub(super) fn internal_error(
        &mut self,
        metrics: &crate::metrics::Metrics,
        action: Action,
        queue_id: &str,
        reason: &str,
        hold: &str,
    ) {
        metrics.action(action, "error");
        tracing::error!(queue_id, reason, action = action.as_str(), "internal error");
        self.reply = act(action, Failure::Internal);
        if action == Action::Quarantine {
            self.quarantine = Some(hold.to_string());
        }
    }
}

/// The answer of one stage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Reply {
    #[default]
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

pub(super) enum Failure {
    BadFrom(Refusal),
    /// (login, From address): `[signing.logins]` refused signing.
    LoginRefused(String, String),
    HeadersTooBig,
    Internal,
}

/// The answer at end of headers when the From gate refused a message and
/// `actions.bad_from` is `action` (what `rmilter explain` reports).
pub fn refusal_reply(action: Action, refusal: Refusal) -> Reply {
    act(action, Failure::BadFrom(refusal))
}

/// The answer at end of headers when `[signing.logins]` refuses `login`
/// for `from` and its action is `action` (what `rmilter explain` reports).
pub fn login_reply(action: Action, login: &str, from: &str) -> Reply {
    act(
        action,
        Failure::LoginRefused(login.to_string(), from.to_string()),
    )
}

/// A message's outcome for the metrics: the answer Postfix gets.
pub(super) fn outcome(reply: &Reply, quarantined: bool) -> &'static str {
    match reply {
        Reply::Reject { .. } => "reject",
        Reply::Tempfail { .. } => "tempfail",
        _ if quarantined => "quarantine",
        _ => "accept",
    }
}

/// The reply for a configured action.
pub(super) fn act(action: Action, failure: Failure) -> Reply {
    match (action, failure) {
        (Action::Accept, _) => Reply::Accept,
        // Quarantine happens at end of message; the caller records the
        // reason and the message goes on.
        (Action::Quarantine, _) => Reply::Continue,
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
        (Action::Reject, Failure::LoginRefused(login, from)) => Reply::Reject {
            code: "550",
            xcode: "5.7.1",
            text: login_text(&login, &from),
        },
        (Action::Tempfail, Failure::LoginRefused(login, from)) => Reply::Tempfail {
            code: "451",
            xcode: "4.7.1",
            text: login_text(&login, &from),
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

/// The reply when `[signing.logins]` refuses: the login and the address.
fn login_text(login: &str, from: &str) -> String {
    reply_line(format!("login {login} may not send as {from}"))
}

fn bad_from_text(refusal: &Refusal) -> String {
    reply_line(format!(
        "message refused: {refusal}; a message must have exactly one From field with one address (RFC 5322 3.6.2)"
    ))
}

/// An SMTP reply text: no control characters (no line breaks), at most
/// 400 bytes, cut at a character boundary. It quotes what the client sent.
fn reply_line(mut text: String) -> String {
    text.retain(|c| !c.is_control());
    if text.len() > 400 {
        let mut cut = 400;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `actions.on_error` at end of message: quarantine holds the message
    /// with the given reason, the other actions answer, and the planned
    /// deletions of forged fields stay in every case.
    #[test]
    fn an_internal_error_applies_on_error() {
        let metrics = crate::metrics::Metrics::new();
        for (action, reply, held) in [
            (Action::Quarantine, Reply::Continue, true),
            (Action::Accept, Reply::Accept, false),
            (
                Action::Tempfail,
                act(Action::Tempfail, Failure::Internal),
                false,
            ),
            (
                Action::Reject,
                act(Action::Reject, Failure::Internal),
                false,
            ),
        ] {
            let mut plan = EomPlan::default();
            plan.delete.push(("Authentication-Results", 2));
            plan.internal_error(&metrics, action, "Q1", "spool: disk full", "held: why");
            assert_eq!(plan.reply, reply, "{action:?}");
            assert_eq!(
                plan.quarantine.as_deref(),
                held.then_some("held: why"),
                "{action:?}"
            );
            assert_eq!(plan.delete, [("Authentication-Results", 2)], "{action:?}");
        }
        assert!(matches!(
            act(Action::Tempfail, Failure::Internal),
            Reply::Tempfail { code: "451", .. }
        ));
    }

    #[test]
    fn reply_lines_are_one_short_line() {
        assert_eq!(reply_line("a\r\nb\tc\0d".to_string()), "abcd");
        let long = reply_line("é".repeat(300));
        assert!(
            long.len() <= 400 && long.chars().all(|c| c == 'é'),
            "{}",
            long.len()
        );
        assert_eq!(long.len(), 400);
    }
}
