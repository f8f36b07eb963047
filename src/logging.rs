//! Logs: text for people or one JSON object per line for log shippers, on stderr, and
//! failure lines that cannot flood. A dependency that is down fails every request; each
//! kind of failure is logged at most once per [`FAILURE_LOG_EVERY`], and the line that
//! is logged says how many were suppressed since the last one.

use std::io::IsTerminal as _;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing_subscriber::EnvFilter;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (colored on a terminal).
    Text,
    /// One JSON object per line.
    Json,
}

/// Installs the global subscriber (`RUST_LOG` filters, default `info`), and a panic
/// hook that logs through it: a panic while a request is handled then carries the
/// request's id, in the log format the operator chose.
pub fn init(format: LogFormat) {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !tracing::enabled!(tracing::Level::ERROR) {
            // Logs are filtered out: a panic still shows, on stderr.
            return default_hook(info);
        }
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
            .unwrap_or("(no message)");
        let location = info
            .location()
            .map_or_else(String::new, |at| format!("{}:{}", at.file(), at.line()));
        tracing::error!(panic = message, location, "panicked");
    }));
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The shortest interval between two lines about one kind of failure.
pub const FAILURE_LOG_EVERY: Duration = Duration::from_secs(5);

/// Kinds of failure that repeat with every request while a dependency is down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    /// The database cannot be reached or does not answer in time.
    Database,
    /// A statement failed for another reason.
    DatabaseQuery,
    /// Redis cannot be reached or does not answer in time.
    Cache,
    /// The server cannot accept connections (out of file descriptors, …).
    Accept,
    /// A committed write could not reach the cache to retire what it changed.
    Invalidation,
    /// At its connection cap, the server closed a connection stalled on its first
    /// request head to make room for a new client.
    Displaced,
    /// A read on a read replica failed, and was made again on the primary.
    Replica,
}

const KINDS: usize = 7;

struct Gate {
    last: Option<Instant>,
    suppressed: u64,
}

static GATES: Mutex<[Gate; KINDS]> = Mutex::new(
    [const {
        Gate {
            last: None,
            suppressed: 0,
        }
    }; KINDS],
);

/// `Some(suppressed)` when a line about `kind` may be logged now, with the number of
/// lines held back since the last one; `None` when it must be held back.
pub fn admit(kind: Failure) -> Option<u64> {
    let mut gates = GATES.lock().unwrap_or_else(PoisonError::into_inner);
    let gate = &mut gates[kind as usize];
    if gate.last.is_some_and(|at| at.elapsed() < FAILURE_LOG_EVERY) {
        gate.suppressed += 1;
        return None;
    }
    gate.last = Some(Instant::now());
    Some(std::mem::take(&mut gate.suppressed))
}

/// `log_limited!(warn, Failure::Cache, error = %e, "message")`: a `tracing` event at
/// that level, admitted by [`admit`], with a `suppressed` field.
macro_rules! log_limited {
    ($level:ident, $kind:expr, $($rest:tt)+) => {
        if let Some(suppressed) = $crate::logging::admit($kind) {
            tracing::$level!(suppressed, $($rest)+);
        }
    };
}
pub(crate) use log_limited;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kind_is_admitted_once_per_interval_and_counts_the_rest() {
        assert_eq!(admit(Failure::Accept), Some(0));
        assert_eq!(admit(Failure::Accept), None);
        assert_eq!(admit(Failure::Accept), None);
        assert_eq!(admit(Failure::DatabaseQuery), Some(0), "kinds are separate");
        let mut gates = GATES.lock().unwrap();
        gates[Failure::Accept as usize].last = Some(Instant::now() - FAILURE_LOG_EVERY);
        drop(gates);
        assert_eq!(admit(Failure::Accept), Some(2));
    }
}
