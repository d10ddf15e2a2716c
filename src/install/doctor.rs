//! The machine checks of `va doctor` (and the first part of `va install-test`): the linked
//! FFmpeg libraries, the state dir, Python, and for the ComfyUI stage `COMFYUI_DIR`, the
//! custom nodes, the two weights, ComfyUI's python modules and the running server.

use std::path::Path;
use std::time::Duration;

use super::assets::NodePack;
use super::nodes::{self, REQUIRED_NODES, WEIGHTS};
use super::{python, Check};
use crate::media::probe;

/// What to check.
#[derive(Debug, Clone)]
pub struct Options {
    /// COMFYUI_DIR, custom nodes, ComfyUI's python; `Err(reason)` skips them.
    pub comfy_local: std::result::Result<(), String>,
    /// The two weights at their exact paths (install-test checks them as assets instead).
    pub weights: bool,
    /// The running ComfyUI at this URL; `Err(reason)` skips it.
    pub comfy_server: std::result::Result<String, String>,
    /// Where the packs come from (for the action lines).
    pub packs: Vec<NodePack>,
    /// A problem with vidax.json to report.
    pub config_problem: Option<String>,
}

/// Python modules looked for in ComfyUI's python: (module, required, why).
const MODULES: [(&str, bool, &str); 3] = [
    ("soundfile", true, "audio I/O of the vidax_wav2lip node"),
    (
        "imageio_ffmpeg",
        true,
        "video I/O of ComfyUI-VideoHelperSuite",
    ),
    (
        "torchcodec",
        false,
        "only a warning: vidax_wav2lip reads audio through soundfile, never torchcodec",
    ),
];

/// All checks, in table order, and the hints to print after them.
pub fn checks(o: &Options) -> (Vec<Check>, Vec<String>) {
    let mut checks = ffmpeg_checks();
    let mut hints = Vec::new();
    checks.push(state_dir_check());
    let py = ["python3", "python"].iter().find_map(|p| super::which(p));
    checks.push(Check::optional(
        "python",
        "python",
        py.is_some(),
        py.map_or("not found on PATH (only needed for ComfyUI)".into(), |p| {
            p.display().to_string()
        }),
    ));
    if let Some(p) = &o.config_problem {
        checks.push(Check::required("config", "vidax.json", false, p.clone()));
    }
    match &o.comfy_local {
        Ok(()) => comfy_local(o, &mut checks),
        Err(why) => checks.push(Check::skipped(
            "comfyui",
            "custom nodes and weights",
            why.clone(),
        )),
    }
    match &o.comfy_server {
        Ok(url) => comfy_server(url, &mut checks, &mut hints),
        Err(why) => checks.push(Check::skipped("comfyui", "comfyui server", why.clone())),
    }
    (checks, hints)
}

fn ffmpeg_checks() -> Vec<Check> {
    let mut checks = Vec::new();
    for lib in probe::library_versions() {
        checks.push(Check::required(
            "ffmpeg",
            lib.name,
            true,
            format!("linked {}", lib.version),
        ));
    }
    for (enc, what) in [("libx264", "H.264 encoder"), ("aac", "AAC encoder")] {
        let ok = probe::has_encoder(enc);
        checks.push(Check::required(
            "ffmpeg",
            format!("encoder {enc}"),
            ok,
            if ok {
                what.to_string()
            } else {
                format!("{what} missing: install Debian's libavcodec59 with libx264 (apt-get install libavcodec-extra59 or libavcodec59)")
            },
        ));
    }
    for dec in [
        "h264",
        "hevc",
        "vp9",
        "aac",
        "mp3float",
        "flac",
        "opus",
        "vorbis",
        "pcm_s16le",
    ] {
        let ok = probe::has_decoder(dec);
        checks.push(Check::optional(
            "ffmpeg",
            format!("decoder {dec}"),
            ok,
            if ok {
                "present"
            } else {
                "missing: inputs of this kind cannot be read"
            },
        ));
    }
    checks
}

/// The state dir: present and writable; a missing one is only a warning (the first run or
/// `va install` creates it) unless it cannot be created.
fn state_dir_check() -> Check {
    let state = crate::files::state_dir();
    if state.is_dir() {
        let ok = tempfile::tempfile_in(&state).is_ok();
        return Check::required(
            "state",
            "state dir",
            ok,
            format!(
                "{}{}",
                state.display(),
                if ok {
                    " (writable)"
                } else {
                    " is not writable: set VA_STATE_DIR"
                }
            ),
        );
    }
    let base = state
        .ancestors()
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("."));
    if tempfile::tempfile_in(base).is_ok() {
        Check::optional(
            "state",
            "state dir",
            false,
            format!("{} does not exist yet", state.display()),
        )
        .with_action(format!("create {}", state.display()))
    } else {
        Check::required(
            "state",
            "state dir",
            false,
            format!(
                "{} cannot be created ({} is not writable): set VA_STATE_DIR",
                state.display(),
                base.display()
            ),
        )
    }
}

fn comfy_local(o: &Options, checks: &mut Vec<Check>) {
    let Some(comfy) = super::comfyui_dir() else {
        checks.push(
            Check::required(
                "comfyui",
                "COMFYUI_DIR",
                false,
                "not set: the custom nodes and weights live under it",
            )
            .with_action("set COMFYUI_DIR to your ComfyUI folder (or pass --skip-comfyui)"),
        );
        return;
    };
    if !comfy.is_dir() {
        checks.push(Check::required(
            "comfyui",
            "COMFYUI_DIR",
            false,
            format!("{} is not a folder", comfy.display()),
        ));
        return;
    }
    checks.push(Check::required(
        "comfyui",
        "COMFYUI_DIR",
        true,
        comfy.display().to_string(),
    ));
    for name in REQUIRED_NODES {
        let dir = nodes::custom_nodes_dir(&comfy).join(name);
        let ok = nodes::is_installed(&dir);
        let mut c = Check::required(
            "comfyui",
            format!("node {name}"),
            ok,
            if ok {
                dir.display().to_string()
            } else if dir.exists() {
                format!("{} has no __init__.py", dir.display())
            } else {
                format!("{} missing", dir.display())
            },
        );
        if !ok {
            c = c.with_action(match o.packs.iter().find(|p| p.name == name) {
                Some(p) if !dir.exists() => format!("git clone {} {}", p.git, dir.display()),
                Some(_) => format!("move {} away, then va install clones it", dir.display()),
                None => format!(
                    "copy comfy_nodes/{name} -> {} (log: installed custom node {name} -> {})",
                    dir.display(),
                    dir.display()
                ),
            });
        }
        checks.push(c);
    }
    if o.weights {
        for (id, rel) in WEIGHTS {
            let p = comfy.join(rel);
            let size = std::fs::metadata(&p)
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            let ok = size.is_some_and(|s| s > 0);
            let c = Check::required(
                "comfyui",
                format!("weight {id}"),
                ok,
                match size {
                    Some(s) if s > 0 => format!("{} ({s} bytes)", p.display()),
                    Some(_) => format!("{} is empty", p.display()),
                    None => format!("{} missing", p.display()),
                },
            );
            checks.push(if ok {
                c
            } else {
                c.with_action(format!(
                    "va install fetches asset {id} (see the assets manifest)"
                ))
            });
        }
    }
    let Some(py) = python::comfy_python(&comfy) else {
        checks.push(Check::required(
            "comfyui",
            "comfyui python",
            false,
            format!(
                "none: neither {} nor python on PATH",
                comfy.join("venv/bin/python").display()
            ),
        ));
        return;
    };
    checks.push(Check::required(
        "comfyui",
        "comfyui python",
        true,
        py.display().to_string(),
    ));
    let names: Vec<&str> = MODULES.iter().map(|m| m.0).collect();
    match python::find_modules(&py, &names) {
        Ok(found) => {
            for (module, required, why) in MODULES {
                let ok = found.get(module).copied().unwrap_or(false);
                let detail = if ok {
                    "installed".to_string()
                } else {
                    format!("not installed in {} ({why})", py.display())
                };
                let c = if required {
                    Check::required("comfyui", format!("python module {module}"), ok, detail)
                        .with_action(format!("va install runs pip with {}", py.display()))
                } else {
                    Check::optional("comfyui", format!("python module {module}"), ok, detail)
                };
                checks.push(if ok { Check { action: None, ..c } } else { c });
            }
        }
        Err(e) => checks.push(Check::required("comfyui", "python modules", false, e)),
    }
}

fn comfy_server(url: &str, checks: &mut Vec<Check>, hints: &mut Vec<String>) {
    let stats = match crate::comfy::health(url, Duration::from_secs(5)) {
        Ok(s) => s,
        Err(e) => {
            checks.push(
                Check::required("comfyui", "comfyui server", false, e.message).with_action(
                    "start ComfyUI (va install does not start it), or pass --skip-comfyui",
                ),
            );
            return;
        }
    };
    let version = stats["system"]["comfyui_version"].as_str().unwrap_or("?");
    checks.push(Check::required(
        "comfyui",
        "comfyui server",
        true,
        format!("ComfyUI {version} at {url}"),
    ));
    let base = url.trim_end_matches('/');
    let has_node = crate::comfy::has_class(base, "VIDAX_Wav2Lip", Duration::from_secs(10));
    checks.push(Check::required(
        "comfyui",
        "node VIDAX_Wav2Lip loaded",
        has_node,
        if has_node {
            "in /object_info".to_string()
        } else {
            format!("{base}/object_info has no VIDAX_Wav2Lip")
        },
    ));
    if !has_node {
        hints.push(format!(
            "the running ComfyUI at {base} has not loaded VIDAX_Wav2Lip: restart ComfyUI so it loads custom_nodes/vidax_wav2lip (run va install first if the node is missing)"
        ));
    }
}
