//! The FFI boundary: the native av_log bridge and the few raw libav calls the safe wrapper
//! lacks. This is the only module (with native/) allowed to use `unsafe`; every block says
//! why it is sound.
#![allow(unsafe_code)] // reason: this module is the crate's FFI boundary

use std::ffi::{c_char, c_int, CStr};

extern "C" {
    /// Implemented in native/av_log_bridge.c.
    fn vidax_install_av_log_bridge(max_level: c_int);
}

/// Called by the native shim with one formatted FFmpeg log line.
#[no_mangle]
pub extern "C" fn vidax_av_log_emit(level: c_int, msg: *const c_char) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the shim passes a NUL-terminated buffer that lives for the duration of this call;
    // we copy it out before returning.
    let text = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    // A panic must never unwind into C.
    let _ = std::panic::catch_unwind(move || emit(level, &text));
}

fn emit(level: c_int, text: &str) {
    // AV_LOG_* values: PANIC 0, FATAL 8, ERROR 16, WARNING 24, INFO 32, VERBOSE 40, DEBUG 48.
    if level <= 16 {
        tracing::error!(stage = "ffmpeg", "{text}");
    } else if level <= 24 {
        tracing::warn!(stage = "ffmpeg", "{text}");
    } else if level <= 32 {
        tracing::info!(stage = "ffmpeg", "{text}");
    } else {
        tracing::debug!(stage = "ffmpeg", "{text}");
    }
}

/// Routes FFmpeg's log lines at or above warning level to `tracing`.
pub fn install_log_bridge() {
    // SAFETY: installs a callback with the signature av_log expects; the callback only
    // formats into a stack buffer and calls vidax_av_log_emit, which is thread-safe.
    unsafe { vidax_install_av_log_bridge(24) }
}

/// Restores the default SIGPIPE action, so `va status | head` ends quietly like other
/// command-line tools instead of failing on a closed pipe (Rust ignores SIGPIPE by default).
pub fn restore_default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL for SIGPIPE is async-signal-safe and is called once at
    // start-up, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}
