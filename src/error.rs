//! The one error type of the crate (SPEC §9).
//!
//! Every failure carries a stable code name and exit code ([`ErrorKind`]) plus a one-line
//! reason that names the file, field or peer at fault. Context is attached where the error is
//! raised; the binary picks the exit code in one place (`main.rs`).

use std::fmt;
use std::path::Path;

/// Stable error codes with their exit codes. The names are part of the user contract
/// (docs/ERRORS.md) and must not change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    Usage,
    ValidationFailed,
    InputNotFound,
    OutputExists,
    ResumeInvalid,
    /// Another run holds the workdir's lock.
    WorkdirBusy,
    UnsupportedFormat,
    HashMismatch,
    DownloadFailed,
    PythonDependencyFailed,
    ComfyuiUnavailable,
    ComfyuiBadResponse,
    ComfyuiOutputsMissing,
    ComfyuiFaceNotFound,
    ComfyuiStartFailed,
    ComfyuiTimeout,
    FfmpegFailed,
    LipsyncFailed,
    Internal,
    /// Stopped by SIGINT (or by the supervising server); the run is recorded `interrupted`.
    Interrupted,
    /// Stopped by SIGTERM; the run is recorded `interrupted`.
    Terminated,
}

impl ErrorKind {
    /// Every kind, in exit-code order (used by the docs test).
    pub const ALL: [ErrorKind; 21] = [
        ErrorKind::Usage,
        ErrorKind::ValidationFailed,
        ErrorKind::InputNotFound,
        ErrorKind::OutputExists,
        ErrorKind::ResumeInvalid,
        ErrorKind::WorkdirBusy,
        ErrorKind::UnsupportedFormat,
        ErrorKind::HashMismatch,
        ErrorKind::DownloadFailed,
        ErrorKind::PythonDependencyFailed,
        ErrorKind::ComfyuiUnavailable,
        ErrorKind::ComfyuiBadResponse,
        ErrorKind::ComfyuiOutputsMissing,
        ErrorKind::ComfyuiFaceNotFound,
        ErrorKind::ComfyuiStartFailed,
        ErrorKind::ComfyuiTimeout,
        ErrorKind::FfmpegFailed,
        ErrorKind::LipsyncFailed,
        ErrorKind::Internal,
        ErrorKind::Interrupted,
        ErrorKind::Terminated,
    ];

    /// The stable code name, e.g. `INPUT_NOT_FOUND`.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Usage => "USAGE",
            ErrorKind::ValidationFailed => "VALIDATION_FAILED",
            ErrorKind::InputNotFound => "INPUT_NOT_FOUND",
            ErrorKind::OutputExists => "OUTPUT_EXISTS",
            ErrorKind::ResumeInvalid => "RESUME_INVALID",
            ErrorKind::WorkdirBusy => "WORKDIR_BUSY",
            ErrorKind::UnsupportedFormat => "UNSUPPORTED_FORMAT",
            ErrorKind::HashMismatch => "HASH_MISMATCH",
            ErrorKind::DownloadFailed => "DOWNLOAD_FAILED",
            ErrorKind::PythonDependencyFailed => "PYTHON_DEPENDENCY_FAILED",
            ErrorKind::ComfyuiUnavailable => "COMFYUI_UNAVAILABLE",
            ErrorKind::ComfyuiBadResponse => "COMFYUI_BAD_RESPONSE",
            ErrorKind::ComfyuiOutputsMissing => "COMFYUI_OUTPUTS_MISSING",
            ErrorKind::ComfyuiFaceNotFound => "COMFYUI_FACE_NOT_FOUND",
            ErrorKind::ComfyuiStartFailed => "COMFYUI_START_FAILED",
            ErrorKind::ComfyuiTimeout => "COMFYUI_TIMEOUT",
            ErrorKind::FfmpegFailed => "FFMPEG_FAILED",
            ErrorKind::LipsyncFailed => "LIPSYNC_FAILED",
            ErrorKind::Internal => "INTERNAL",
            ErrorKind::Interrupted => "INTERRUPTED",
            ErrorKind::Terminated => "TERMINATED",
        }
    }

    /// The process exit code for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Usage => 2,
            ErrorKind::ValidationFailed => 10,
            ErrorKind::InputNotFound => 11,
            ErrorKind::OutputExists => 12,
            ErrorKind::ResumeInvalid => 13,
            ErrorKind::WorkdirBusy => 14,
            ErrorKind::UnsupportedFormat => 20,
            ErrorKind::HashMismatch => 21,
            ErrorKind::DownloadFailed => 22,
            ErrorKind::PythonDependencyFailed => 23,
            ErrorKind::ComfyuiUnavailable => 30,
            ErrorKind::ComfyuiBadResponse => 31,
            ErrorKind::ComfyuiOutputsMissing => 32,
            ErrorKind::ComfyuiFaceNotFound => 33,
            ErrorKind::ComfyuiStartFailed => 34,
            ErrorKind::ComfyuiTimeout => 35,
            ErrorKind::FfmpegFailed => 40,
            ErrorKind::LipsyncFailed => 50,
            ErrorKind::Internal => 70,
            // The shell's convention for a command ended by a signal: 128 + its number.
            ErrorKind::Interrupted => 130,
            ErrorKind::Terminated => 143,
        }
    }
}

impl ErrorKind {
    /// The run was stopped on request (a signal or its supervisor), not failed.
    pub fn is_stop(self) -> bool {
        matches!(self, ErrorKind::Interrupted | ErrorKind::Terminated)
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// An error with its code, a one-line reason and an optional hint on what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
    pub hint: Option<String>,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: one_line(message.into()),
            hint: None,
        }
    }

    /// Adds what the user can do about it.
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(one_line(hint.into()));
        self
    }

    /// An error about a file: the message names the path first.
    pub fn at_path(kind: ErrorKind, path: &Path, reason: impl fmt::Display) -> Self {
        Error::new(kind, format!("{}: {}", path.display(), reason))
    }

    /// The same error about the file `path`: its message prefixed with the path, the code
    /// and the hint kept (for an error raised where the file was not known).
    pub fn for_path(mut self, path: &Path) -> Self {
        self.message = format!("{}: {}", path.display(), self.message);
        self
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Internal, message)
    }

    pub fn code(&self) -> &'static str {
        self.kind.code()
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }
}

/// Error messages are printed as one line: newlines from foreign messages are folded.
fn one_line(s: String) -> String {
    if s.contains('\n') {
        s.split('\n')
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    } else {
        s
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.code(), self.message)?;
        if let Some(h) = &self.hint {
            write!(f, " ({h})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attaching context to foreign errors at the point where they are raised.
pub trait Context<T> {
    /// Maps the error to `kind` with `path: reason`.
    fn at(self, kind: ErrorKind, path: &Path) -> Result<T>;
    /// Maps the error to `kind` with `what: reason`.
    fn ctx(self, kind: ErrorKind, what: impl fmt::Display) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn at(self, kind: ErrorKind, path: &Path) -> Result<T> {
        self.map_err(|e| Error::at_path(kind, path, e))
    }
    fn ctx(self, kind: ErrorKind, what: impl fmt::Display) -> Result<T> {
        self.map_err(|e| Error::new(kind, format!("{what}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_exit_codes_are_unique() {
        let mut codes = std::collections::HashSet::new();
        let mut exits = std::collections::HashSet::new();
        for k in ErrorKind::ALL {
            assert!(codes.insert(k.code()), "duplicate code {}", k.code());
            assert!(
                exits.insert(k.exit_code()),
                "duplicate exit {}",
                k.exit_code()
            );
        }
    }

    #[test]
    fn for_path_names_the_file_and_keeps_code_and_hint() {
        let e = Error::new(ErrorKind::Internal, "no memory")
            .with_hint("free some")
            .for_path(Path::new("/in/a.png"));
        assert_eq!(e.to_string(), "INTERNAL: /in/a.png: no memory (free some)");
    }

    #[test]
    fn messages_are_one_line() {
        let e = Error::new(ErrorKind::FfmpegFailed, "a\nb\n").with_hint("x\ny");
        assert_eq!(e.to_string(), "FFMPEG_FAILED: a | b (x | y)");
    }
}
