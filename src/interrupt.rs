//! Stopping a run on request: Ctrl-C (SIGINT), SIGTERM, or the supervising `va serve`
//! closing the run's stdin pipe.
//!
//! A request only sets a flag. The places where a run spends its time poll it and end with
//! [`ErrorKind::Interrupted`] / [`ErrorKind::Terminated`]: the runner before and after each
//! phase, the encode before every frame, the ComfyUI stage while it waits on the server
//! ([`unless_stopped`]). The error then unwinds like any other failure, so the run removes its
//! partial final and records itself as `interrupted` before the process exits (130 after
//! SIGINT, 143 after SIGTERM). A second SIGINT or SIGTERM while that is under way ends the
//! process at once (the signal's default action): a run stuck in cleaning up can still be
//! stopped, and it then shows as `interrupted` once its workdir lock is free.
//!
//! This module owns the flag and the signal handlers; it does not decide what a stopped run
//! records (the runner does).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Once;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};

/// Why the run was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// SIGINT (Ctrl-C).
    Sigint,
    /// SIGTERM.
    Sigterm,
    /// The supervising server closed the pipe (a cancel, or the server went away).
    Supervisor,
}

impl Reason {
    fn code(self) -> usize {
        match self {
            Reason::Sigint => 1,
            Reason::Sigterm => 2,
            Reason::Supervisor => 3,
        }
    }

    fn from_code(c: usize) -> Option<Reason> {
        match c {
            1 => Some(Reason::Sigint),
            2 => Some(Reason::Sigterm),
            3 => Some(Reason::Supervisor),
            _ => None,
        }
    }

    /// What stopped the run, for its record.
    pub fn describe(self) -> &'static str {
        match self {
            Reason::Sigint => "SIGINT",
            Reason::Sigterm => "SIGTERM",
            Reason::Supervisor => "the supervising server (cancelled or gone)",
        }
    }

    pub fn kind(self) -> ErrorKind {
        match self {
            Reason::Sigterm => ErrorKind::Terminated,
            Reason::Sigint | Reason::Supervisor => ErrorKind::Interrupted,
        }
    }
}

/// The request, as a [`Reason::code`]; 0 while none. Statics, so the signal handlers need no
/// allocation.
static STOP: AtomicUsize = AtomicUsize::new(0);
/// Set by the first signal: a second one takes the default action.
static ARMED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Catches SIGINT and SIGTERM for the rest of the process (idempotent). Until this is called
/// the signals keep their default action: commands that write no run record need no cleanup.
pub fn install() -> Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| result = register());
    result
}

#[cfg(unix)]
fn register() -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    use signal_hook::flag;
    for (sig, reason) in [(SIGINT, Reason::Sigint), (SIGTERM, Reason::Sigterm)] {
        // Order matters: the default action is checked before this signal arms it.
        let done = flag::register_conditional_default(sig, &ARMED)
            .and_then(|_| flag::register_usize(sig, &STOP, reason.code()))
            .and_then(|_| flag::register(sig, &ARMED));
        done.map_err(|e| Error::internal(format!("cannot install the signal handlers: {e}")))?;
    }
    Ok(())
}

#[cfg(not(unix))]
fn register() -> Result<()> {
    Ok(())
}

/// Asks the run to stop (the supervisor's pipe closed). An earlier request is kept.
pub fn request(reason: Reason) {
    let _ = STOP.compare_exchange(0, reason.code(), Ordering::SeqCst, Ordering::SeqCst);
}

/// The pending request, if any.
pub fn requested() -> Option<Reason> {
    Reason::from_code(STOP.load(Ordering::SeqCst))
}

/// `Err` (`INTERRUPTED` or `TERMINATED`) once a stop was requested.
pub fn check() -> Result<()> {
    match requested() {
        None => Ok(()),
        Some(r) => Err(error(r)),
    }
}

/// The error a stopped run ends with.
pub fn error(reason: Reason) -> Error {
    Error::new(reason.kind(), format!("stopped by {}", reason.describe()))
}

/// How often the waits poll the flag: a stop is noticed within this.
pub const POLL: Duration = Duration::from_millis(50);

/// Runs `fut` unless a stop is requested first; then it is dropped (its requests abandoned)
/// and the stop's error returned.
pub async fn unless_stopped<T>(fut: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    let stopped = async {
        loop {
            if let Some(r) = requested() {
                return error(r);
            }
            tokio::time::sleep(POLL).await;
        }
    };
    tokio::select! {
        out = fut => out,
        e = stopped => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_map_to_their_codes_and_exit_codes() {
        for r in [Reason::Sigint, Reason::Sigterm, Reason::Supervisor] {
            assert_eq!(Reason::from_code(r.code()), Some(r));
        }
        assert_eq!(Reason::from_code(0), None);
        assert_eq!(error(Reason::Sigint).exit_code(), 130);
        assert_eq!(error(Reason::Sigterm).exit_code(), 143);
        assert_eq!(error(Reason::Supervisor).exit_code(), 130);
        assert!(error(Reason::Sigterm).message.contains("SIGTERM"));
    }
}
