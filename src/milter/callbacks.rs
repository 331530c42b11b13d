//! indymilter callbacks. Each one fetches the connection's [`Session`],
//! calls the one method that holds the logic, and turns the [`Reply`] into
//! the protocol answer. No error escapes a callback and nothing here parses
//! peer input.

use super::MilterState;
use super::reply::{EomPlan, Reply};
use super::session::{NoReply, Session};
use indymilter::{
    ActionError, Actions, Callbacks, Context, ContextActions, EomActions, EomContext, MacroStage,
    NegotiateContext, ProtoOpts, SetErrorReply, SmtpReply, SocketInfo, Status,
};
use std::ffi::CString;
use std::sync::Arc;
use tracing::{error, warn};

/// The callbacks of the rmilter server.
pub fn callbacks(state: Arc<MilterState>) -> Callbacks<Session> {
    Callbacks::new()
        .on_negotiate(move |cx, actions, opts| {
            let state = state.clone();
            Box::pin(async move { negotiate(cx, state, actions, opts) })
        })
        .on_connect(|cx, hostname, socket| {
            Box::pin(async move {
                with_session(cx, |s| {
                    s.connect(&hostname.to_string_lossy(), socket_addr(&socket))
                })
            })
        })
        .on_helo(|cx, name| {
            Box::pin(async move { with_session(cx, |s| s.helo(&name.to_string_lossy())) })
        })
        .on_mail(|cx, args| {
            Box::pin(async move {
                let sender = args
                    .first()
                    .map(|a| a.to_string_lossy().into_owned())
                    .unwrap_or_default();
                let macros = &cx.macros;
                let reply = match cx.data.as_mut() {
                    Some(session) => session.mail(&sender, macros),
                    None => missing_session(),
                };
                apply(&mut cx.reply, reply)
            })
        })
        .on_rcpt(|cx, args| {
            Box::pin(async move {
                let rcpt = args
                    .first()
                    .map(|a| a.to_string_lossy().into_owned())
                    .unwrap_or_default();
                with_session(cx, |s| s.rcpt(&rcpt))
            })
        })
        .on_header(|cx, name, value| {
            Box::pin(
                async move { with_session(cx, |s| s.header(name.as_bytes(), value.as_bytes())) },
            )
        })
        .on_eoh(|cx| {
            Box::pin(async move {
                let macros = &cx.macros;
                let reply = match cx.data.as_mut() {
                    Some(session) => session.eoh(macros),
                    None => missing_session(),
                };
                apply(&mut cx.reply, reply)
            })
        })
        .on_body(|cx, chunk| Box::pin(async move { with_session(cx, |s| s.body(&chunk)) }))
        .on_eom(|cx| Box::pin(eom(cx)))
        .on_abort(|cx| {
            Box::pin(async move {
                if let Some(session) = cx.data.as_mut() {
                    session.abort();
                }
                Status::Continue
            })
        })
        .on_close(|cx| {
            Box::pin(async move {
                if let Some(session) = cx.data.as_mut() {
                    session.close();
                }
                Status::Continue
            })
        })
}

/// Negotiate what [`request`] asks for, and start the connection's session.
fn negotiate(
    cx: &mut NegotiateContext<Session>,
    state: Arc<MilterState>,
    mta_actions: Actions,
    mta_opts: ProtoOpts,
) -> Status {
    // RCPT events only when failure reports are on and include the
    // recipients ([report.failure] include_rcpt_to): otherwise Postfix
    // skips them.
    let failure = &state.runtime().config.report.failure;
    let rcpt = failure.enabled && failure.include_rcpt_to;
    if request(cx, mta_actions, mta_opts, rcpt).is_err() {
        error!(offered = ?mta_actions, "the MTA does not offer adding, changing and quarantining; refusing the connection");
        return Status::Reject;
    }
    let granted = cx.requested_opts;
    cx.data = Some(Session::new(
        state,
        granted.contains(ProtoOpts::LEADING_SPACE),
        NoReply {
            connect: granted.contains(ProtoOpts::NOREPLY_CONNECT),
            helo: granted.contains(ProtoOpts::NOREPLY_HELO),
            mail: granted.contains(ProtoOpts::NOREPLY_MAIL),
            header: granted.contains(ProtoOpts::NOREPLY_HEADER),
            eoh: granted.contains(ProtoOpts::NOREPLY_EOH),
            body: granted.contains(ProtoOpts::NOREPLY_BODY),
            rcpt: granted.contains(ProtoOpts::NOREPLY_RCPT),
        },
    ));
    Status::Continue
}

/// The MTA does not offer the actions rmilter needs.
#[derive(Debug)]
pub struct MissingActions;

/// Fill in rmilter's side of option negotiation on `cx`: the actions it
/// needs (insert signatures and Authentication-Results, delete forged
/// Authentication-Results, hold messages in the quarantine); the leading
/// space of header values (so signed headers are reproduced byte for
/// byte); no reply at connect, HELO, MAIL, per header field, at end of
/// headers and per body chunk when `mta_opts` allows it (rmilter then
/// answers only at end of message: Postfix buffers the events that need no
/// answer and writes them when it waits for one, so each answer is a round
/// trip and a wake-up on both sides); RCPT events only with `rcpt` (else
/// the MTA skips them); and the macros below. Public so that the
/// benchmark's floor milter (benches/floor_milter.rs) negotiates the same.
pub fn request<T: Send>(
    cx: &mut NegotiateContext<T>,
    mta_actions: Actions,
    mta_opts: ProtoOpts,
    rcpt: bool,
) -> Result<(), MissingActions> {
    let wanted = Actions::ADD_HEADER | Actions::CHANGE_HEADER | Actions::QUARANTINE;
    if !mta_actions.contains(wanted) {
        return Err(MissingActions);
    }
    cx.requested_actions = wanted;
    cx.requested_opts |= mta_opts
        & (ProtoOpts::LEADING_SPACE
            | ProtoOpts::NOREPLY_CONNECT
            | ProtoOpts::NOREPLY_HELO
            | ProtoOpts::NOREPLY_MAIL
            | ProtoOpts::NOREPLY_HEADER
            | ProtoOpts::NOREPLY_EOH
            | ProtoOpts::NOREPLY_BODY);
    if rcpt {
        cx.requested_opts |= mta_opts & ProtoOpts::NOREPLY_RCPT;
    } else {
        cx.requested_opts |= ProtoOpts::NO_RCPT;
    }
    for (stage, macros) in [
        (
            MacroStage::Connect,
            "j {daemon_name} {client_addr} {client_name}",
        ),
        (MacroStage::Mail, "{auth_authen} {auth_type}"),
        (MacroStage::Eoh, "i"),
        (MacroStage::Eom, "i"),
    ] {
        if let Ok(list) = CString::new(macros) {
            cx.requested_macros.insert(stage, list);
        }
    }
    Ok(())
}

async fn eom(cx: &mut EomContext<Session>) -> Status {
    let macros = &cx.macros;
    let plan = match cx.data.as_mut() {
        Some(session) => session.eom(macros).await,
        None => EomPlan::reply(missing_session()),
    };
    if let Err(e) = apply_plan(&cx.actions, &plan).await {
        let session = cx.data.as_ref();
        let queue_id = session
            .map(|s| s.last_queue_id().to_string())
            .unwrap_or_default();
        error!(queue_id, error = %e, "could not apply the message edits");
        let on_error = session.map_or_else(missing_session, |s| s.on_error_reply());
        return apply(&mut cx.reply, on_error);
    }
    apply(&mut cx.reply, plan.reply)
}

/// Deletions first (highest index first, as planned), then insertions at
/// index 0 (RFC 6376 §5.6, RFC 8601 §5: on top, above Postfix's own
/// Received field), then the quarantine.
async fn apply_plan(actions: &EomActions, plan: &EomPlan) -> Result<(), ActionError> {
    for (name, index) in &plan.delete {
        actions
            .change_header(*name, *index, None::<CString>)
            .await?;
    }
    for (name, value) in &plan.insert {
        let value = CString::new(value.as_str()).map_err(|_| ActionError::InvalidParam)?;
        actions.insert_header(0, *name, value).await?;
    }
    if let Some(reason) = &plan.quarantine {
        let reason = CString::new(reason.as_str()).map_err(|_| ActionError::InvalidParam)?;
        actions.quarantine(reason).await?;
    }
    Ok(())
}

fn with_session(cx: &mut Context<Session>, f: impl FnOnce(&mut Session) -> Reply) -> Status {
    let reply = match cx.data.as_mut() {
        Some(session) => f(session),
        None => missing_session(),
    };
    apply(&mut cx.reply, reply)
}

/// A callback ran without the session negotiate creates: a protocol
/// violation by the peer. Refuse temporarily rather than guess.
fn missing_session() -> Reply {
    warn!("milter command before option negotiation; answering tempfail");
    Reply::Tempfail {
        code: "451",
        xcode: "4.3.0",
        text: "milter protocol error".to_string(),
    }
}

fn apply(reply: &mut SmtpReply, r: Reply) -> Status {
    match r {
        Reply::Continue => Status::Continue,
        Reply::Accept => Status::Accept,
        Reply::Noreply => Status::Noreply,
        Reply::Reject { code, xcode, text } => {
            if let Err(e) = reply.set_error_reply(code, Some(xcode), [text.as_str()]) {
                warn!(error = %e, "reply text refused; using the default reject");
            }
            Status::Reject
        }
        Reply::Tempfail { code, xcode, text } => {
            if let Err(e) = reply.set_error_reply(code, Some(xcode), [text.as_str()]) {
                warn!(error = %e, "reply text refused; using the default tempfail");
            }
            Status::Tempfail
        }
    }
}

fn socket_addr(socket: &SocketInfo) -> Option<std::net::SocketAddr> {
    match socket {
        SocketInfo::Inet(addr) => Some(*addr),
        _ => None,
    }
}
