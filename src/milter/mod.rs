//! The milter protocol side: indymilter callbacks as thin adapters over the
//! per-connection [`session::Session`], and the state shared by all
//! connections (the current [`Runtime`], the count of messages in
//! progress, which graceful shutdown waits for, and the [`Metrics`]).
//!
//! [`direction`] (outbound or inbound, and why) and [`inbound::evaluate`]
//! (verdict, decision, Authentication-Results, answer) are the functions
//! `rmilter explain` calls too, so its trace is the daemon's evaluation.

mod callbacks;
pub mod direction;
pub mod inbound;
mod message;
mod reply;
mod session;
mod spool;
pub mod wire;

pub use callbacks::{MissingActions, callbacks, request};
pub use direction::{ClientFacts, Direction};
pub use inbound::results_field;
pub use reply::{EomPlan, Reply, login_reply, refusal_reply};
pub use session::{NoReply, Session};

use crate::metrics::Metrics;
use crate::report::{Discard, EvaluationSink};
use crate::runtime::Runtime;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// Spooled messages (larger than `limits.memory_bytes`) verified at the
/// same time. Verification maps the whole spool file; without a limit, 20
/// concurrent 10 MB messages were 200 MB of mapped pages at once. With it,
/// memory stays near this many message sizes whatever the concurrency;
/// smaller messages never wait.
pub const SPOOLED_AT_ONCE: usize = 2;

/// State shared by every milter connection.
pub struct MilterState {
    runtime: RwLock<Arc<Runtime>>,
    /// Turns for verifying a spooled (large) message, see [`SPOOLED_AT_ONCE`].
    spooled: tokio::sync::Semaphore,
    in_flight: AtomicUsize,
    sink: Arc<dyn EvaluationSink>,
    metrics: Arc<Metrics>,
}

impl MilterState {
    pub fn new(runtime: Runtime) -> Arc<Self> {
        MilterState::with_sink(runtime, Arc::new(Discard))
    }

    /// With a store for the evaluation records of verified messages.
    pub fn with_sink(mut runtime: Runtime, sink: Arc<dyn EvaluationSink>) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        metrics.adopt(&mut runtime.key_counters);
        if let Some(stats) = sink.stats() {
            metrics.set_report_stats(stats);
        }
        Arc::new(MilterState {
            runtime: RwLock::new(Arc::new(runtime)),
            spooled: tokio::sync::Semaphore::new(SPOOLED_AT_ONCE),
            in_flight: AtomicUsize::new(0),
            sink,
            metrics,
        })
    }

    /// The counters of this server.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn sink(&self) -> &dyn EvaluationSink {
        self.sink.as_ref()
    }

    /// The runtime new messages start with.
    pub fn runtime(&self) -> Arc<Runtime> {
        match self.runtime.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replace the runtime; messages in progress keep the one they started with.
    pub fn swap(&self, mut runtime: Runtime) {
        self.metrics.adopt(&mut runtime.key_counters);
        let new = Arc::new(runtime);
        match self.runtime.write() {
            Ok(mut guard) => *guard = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }

    /// Wait for a turn to verify a spooled message (held while the permit
    /// lives).
    async fn spooled_turn(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.spooled.acquire().await.ok()
    }

    /// Messages between MAIL and end of message (or abort).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    fn begin_message(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }
}

/// Counts one message in progress until dropped.
struct InFlight(Arc<MilterState>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl crate::metrics::http::Source for MilterState {
    fn metrics(&self) -> String {
        self.metrics
            .render(!self.runtime().verifier.resolver_down(), self.in_flight())
    }

    fn unhealthy(&self) -> Option<String> {
        self.runtime()
            .verifier
            .resolver_down()
            .then(|| "DNS resolver unreachable: inbound mail gets temperror".to_string())
    }
}
