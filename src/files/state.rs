//! The state dir (SPEC §8): where the run registry, configs, assets and the API's job records
//! live.

use std::path::PathBuf;

/// The state dir: `$VA_STATE_DIR/state`, with `VA_STATE_DIR` defaulting to `~/.va` (SPEC §8).
pub fn state_dir() -> PathBuf {
    state_dir_from(
        std::env::var_os("VA_STATE_DIR"),
        std::env::var_os("HOME").or_else(|| std::env::var_os("USERPROFILE")),
    )
}

/// [`state_dir`] without the environment, for tests. Empty values count as unset.
fn state_dir_from(
    va_state_dir: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> PathBuf {
    let base = match va_state_dir.filter(|v| !v.is_empty()) {
        Some(v) => PathBuf::from(v),
        None => match home.filter(|h| !h.is_empty()) {
            Some(h) => PathBuf::from(h).join(".va"),
            // No home at all (a bare container): beside the working directory, visibly.
            None => PathBuf::from(".va"),
        },
    };
    base.join("state")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsString;

    #[test]
    fn state_dir_follows_va_state_dir_then_home() {
        assert_eq!(
            state_dir_from(
                Some(OsString::from("/srv/va")),
                Some(OsString::from("/home/u"))
            ),
            PathBuf::from("/srv/va/state")
        );
        assert_eq!(
            state_dir_from(None, Some(OsString::from("/home/u"))),
            PathBuf::from("/home/u/.va/state")
        );
        assert_eq!(
            state_dir_from(Some(OsString::new()), Some(OsString::from("/home/u"))),
            PathBuf::from("/home/u/.va/state")
        );
        assert_eq!(state_dir_from(None, None), PathBuf::from(".va/state"));
    }
}
