//! Setup (SPEC §8): what `va doctor`, `va install-test` and `va install` check and do.
//!
//! - [`check`]: one checked item with its status and what `install` would do about it;
//! - [`doctor`]: the machine's checks (FFmpeg, state dir, Python, ComfyUI and its nodes);
//! - [`assets`]: the assets manifest (resolution, parsing, per-asset check and fetch);
//! - [`download`]: fetching one source to a destination, hash-verified, never partial;
//! - [`nodes`]: the ComfyUI custom nodes (git packs, the project's own node), confined to
//!   `<COMFYUI_DIR>/custom_nodes/`;
//! - [`python`]: ComfyUI's python and the pip installs;
//! - [`run`]: the ordered `install` and `install-test`.
//!
//! Nothing here runs during a job; the engine never depends on this module.

pub mod assets;
pub mod check;
pub mod doctor;
pub mod download;
pub mod nodes;
pub mod process;
pub mod python;
pub mod run;

use std::path::{Path, PathBuf};

pub use check::{Check, Report, Status};

/// The three example configs `install` copies into `state/config`.
pub const CONFIG_FILES: [&str; 3] = ["vidax.json", "lipsync.providers.json", "assets.json"];

/// The default ComfyUI address when neither a flag nor `vidax.json` names one.
pub const DEFAULT_COMFYUI_URL: &str = "http://127.0.0.1:8188";

/// `COMFYUI_DIR`, when set to a non-empty value.
pub fn comfyui_dir() -> Option<PathBuf> {
    std::env::var_os("COMFYUI_DIR")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// `$VA_STATE_DIR/state/config`.
pub fn state_config_dir() -> PathBuf {
    crate::files::state_dir().join("config")
}

/// The folder holding the shipped `config/` and `comfy_nodes/`: `VA_RESOURCE_DIR`, else the
/// nearest ancestor of the `va` executable that has `comfy_nodes/vidax_wav2lip` (a checkout
/// running `target/release/va`, or an unpacked release), else the source tree `va` was built
/// from.
pub fn resource_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("VA_RESOURCE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(d);
    }
    let has_resources = |d: &Path| d.join("comfy_nodes").join("vidax_wav2lip").is_dir();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(found) = exe.ancestors().skip(1).take(4).find(|d| has_resources(d)) {
            return found.to_path_buf();
        }
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The VIDAX config (`vidax.json`) as far as setup needs it: `VIDAX_CONFIG` →
/// `state/config/vidax.json` → the shipped `config/vidax.json`. A file that is not JSON is
/// reported, not fatal: setup must still be able to say what is wrong.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub path: Option<PathBuf>,
    pub skip_comfyui: bool,
    pub comfyui_url: Option<String>,
    pub problem: Option<String>,
}

impl Settings {
    pub fn load() -> Settings {
        let candidates = [
            std::env::var_os("VIDAX_CONFIG")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            Some(state_config_dir().join("vidax.json")),
            Some(resource_dir().join("config").join("vidax.json")),
        ];
        let Some(path) = candidates.into_iter().flatten().find(|p| p.is_file()) else {
            return Settings::default();
        };
        let parsed = std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|e| e.to_string()));
        match parsed {
            Ok(v) => Settings {
                skip_comfyui: v["skip_comfyui"].as_bool().unwrap_or(false),
                comfyui_url: v["comfyui"]["url"].as_str().map(str::to_string),
                path: Some(path),
                problem: None,
            },
            Err(e) => Settings {
                problem: Some(format!("{}: not valid JSON: {e}", path.display())),
                path: Some(path),
                ..Settings::default()
            },
        }
    }
}

/// `VA_INSTALL_COMFY_NODES`: anything but `0`/`false`/`no`/`off` (any case) leaves the
/// custom-node block on.
pub fn comfy_nodes_enabled_by_env() -> bool {
    std::env::var("VA_INSTALL_COMFY_NODES").map_or(true, |v| {
        !matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "0" | "false" | "no" | "off"
        )
    })
}

/// Finds a program on PATH without running it.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}

/// `root/rel`, refused when it would lead outside `root`: `rel` must be plain (no root, no
/// `..`), and the deepest part of the path that exists must resolve (symlinks followed) to a
/// place inside the resolved `root`. With `create`, the parent folders are made first (so
/// the check covers them). The error says why, naming the path.
pub fn confined(root: &Path, rel: &Path, create: bool) -> Result<PathBuf, String> {
    if !assets::is_plain_relative(rel) {
        return Err(format!(
            "{}: must be a relative path without \"..\"",
            rel.display()
        ));
    }
    let path = root.join(rel);
    // Checked before anything is created (a folder made through a symlink would already be
    // outside), and again after.
    inside(root, &path)?;
    if create {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("{}: cannot create: {e}", parent.display()))?;
        }
        inside(root, &path)?;
    }
    Ok(path)
}

fn inside(root: &Path, path: &Path) -> Result<(), String> {
    let Ok(real_root) = root.canonicalize() else {
        // Nothing of it exists yet, so nothing can lead elsewhere.
        return Ok(());
    };
    let existing = path
        .ancestors()
        .find(|p| p.symlink_metadata().is_ok())
        .unwrap_or(root);
    let real = existing
        .canonicalize()
        .map_err(|e| format!("{}: {e}", existing.display()))?;
    if real.starts_with(&real_root) {
        Ok(())
    } else {
        Err(format!(
            "{} resolves to {}, outside {}: refused",
            path.display(),
            real.display(),
            real_root.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confined_refuses_dotdot_and_symlinks_out() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        assert!(confined(&root, Path::new("../outside/x"), true).is_err());
        assert!(confined(&root, Path::new("/etc/passwd"), false).is_err());
        let ok = confined(&root, Path::new("a/b/c.pth"), true).unwrap();
        assert_eq!(ok, root.join("a/b/c.pth"));
        assert!(root.join("a/b").is_dir());
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
            let e = confined(&root, Path::new("link/x.pth"), true).unwrap_err();
            assert!(e.contains("outside"), "{e}");
            assert!(!outside.join("x.pth").exists());
            // A dangling link is refused too (it cannot be resolved).
            std::os::unix::fs::symlink(d.path().join("nowhere"), root.join("dangling")).unwrap();
            assert!(confined(&root, Path::new("dangling"), false).is_err());
        }
    }
}
