//! floor-milter: what the milter protocol costs on its own, for `benches/run.sh`.
//!
//!     floor-milter unix:/path/to/sock | inet:127.0.0.1:8891 [--only-eom]
//!
//! It is built the way rmilter is (rmilter's own listener and connections,
//! indymilter, a current-thread tokio runtime), negotiates what rmilter
//! negotiates (the same actions, "no reply" options and macros) and at end
//! of message inserts one Authentication-Results field and accepts. It
//! parses nothing, looks nothing up and computes no signature. Measured
//! through Postfix it gives the floor of any milter of this shape: the
//! CPU a message costs rmilter beyond it is rmilter's own work, and its
//! end-to-end rate against Postfix without a milter is what the protocol
//! alone leaves on the machine. With `--only-eom` it asks the MTA to skip every
//! event but end of message (and the message with it): what the MTA pays for
//! a milter it talks to once per message. Not installed, not part of rmilter.

use indymilter::{Actions, Callbacks, ContextActions, NegotiateContext, ProtoOpts, Status};
use rmilter::config::{SocketOptions, parse_listen};
use rmilter::milter::request;
use std::ffi::CString;
use std::process::ExitCode;

/// The answer to an event whose reply the MTA may skip: none if it was
/// negotiated so (indymilter insists), else Continue.
fn pass(granted: Option<&ProtoOpts>, noreply: ProtoOpts) -> Status {
    if granted.is_some_and(|g| g.contains(noreply)) {
        Status::Noreply
    } else {
        Status::Continue
    }
}

/// Every event rmilter takes is asked for here too (indymilter tells the
/// MTA to skip the events that have no callback), and answered at once;
/// with `only_eom` none but end of message.
fn callbacks(only_eom: bool) -> Callbacks<ProtoOpts> {
    let callbacks = Callbacks::new()
        .on_negotiate(|cx, actions, opts| Box::pin(async move { negotiate(cx, actions, opts) }))
        .on_eom(|cx| {
            Box::pin(async move {
                let value = CString::new(" bench.example.test; none").expect("no NUL");
                match cx
                    .actions
                    .insert_header(0, "Authentication-Results", value)
                    .await
                {
                    Ok(()) => Status::Accept,
                    Err(_) => Status::Tempfail,
                }
            })
        });
    if only_eom {
        return callbacks;
    }
    callbacks
        .on_connect(|cx, _, _| {
            Box::pin(async move { pass(cx.data.as_ref(), ProtoOpts::NOREPLY_CONNECT) })
        })
        .on_helo(|cx, _| Box::pin(async move { pass(cx.data.as_ref(), ProtoOpts::NOREPLY_HELO) }))
        .on_mail(|cx, _| Box::pin(async move { pass(cx.data.as_ref(), ProtoOpts::NOREPLY_MAIL) }))
        .on_header(|cx, _, _| {
            Box::pin(async move { pass(cx.data.as_ref(), ProtoOpts::NOREPLY_HEADER) })
        })
        .on_eoh(|cx| Box::pin(async move { pass(cx.data.as_ref(), ProtoOpts::NOREPLY_EOH) }))
        .on_body(|cx, _| Box::pin(async move { pass(cx.data.as_ref(), ProtoOpts::NOREPLY_BODY) }))
}

/// What rmilter asks for (its own negotiation, with RCPT events off, as
/// in its default configuration).
fn negotiate(cx: &mut NegotiateContext<ProtoOpts>, actions: Actions, opts: ProtoOpts) -> Status {
    if request(cx, actions, opts, false).is_err() {
        return Status::Reject;
    }
    cx.data = Some(cx.requested_opts);
    Status::Continue
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (spec, only_eom) = match args.as_slice() {
        [spec] => (spec, false),
        [spec, flag] if flag == "--only-eom" => (spec, true),
        _ => {
            eprintln!("usage: floor-milter unix:PATH | inet:HOST:PORT [--only-eom]");
            return ExitCode::from(2);
        }
    };
    let addr = match parse_listen(spec) {
        Ok(addr) => addr,
        Err(e) => {
            eprintln!("floor-milter: {spec}: {e}");
            return ExitCode::from(2);
        }
    };
    let socket = SocketOptions {
        mode: 0o666,
        owner: None,
        group: None,
        allow_remote: false,
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("floor-milter: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let bound = rmilter::daemon::bind(&addr, &socket)?;
        let stop = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        let served = indymilter::run(
            bound.listener,
            callbacks(only_eom),
            indymilter::Config::default(),
            stop,
        )
        .await;
        rmilter::daemon::remove_socket(bound.unix_path.as_deref());
        served.map_err(anyhow::Error::from)
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("floor-milter: {e:#}");
            ExitCode::FAILURE
        }
    }
}
