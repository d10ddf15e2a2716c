//! `va doctor`: what this machine has. This build checks the FFmpeg part (linked libraries,
//! the H.264 and AAC encoders, decoders for common inputs) and the state dir.

use clap::Args;
use serde::Serialize;

use crate::error::Result;
use crate::media::probe;
use crate::record::registry;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Skip the ComfyUI checks (also `skip_comfyui=true` in the config).
    #[arg(long)]
    pub skip_comfyui: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize)]
struct Check {
    name: String,
    ok: bool,
    required: bool,
    detail: String,
}

/// Exit code when a required part is missing (the UNSUPPORTED_FORMAT code).
const MISSING: i32 = 20;

pub fn run(a: DoctorArgs) -> Result<i32> {
    let mut checks = Vec::new();
    for lib in probe::library_versions() {
        checks.push(Check {
            name: lib.name.into(),
            ok: true,
            required: true,
            detail: format!("linked {}", lib.version),
        });
    }
    for (enc, what) in [("libx264", "H.264 encoder"), ("aac", "AAC encoder")] {
        let ok = probe::has_encoder(enc);
        checks.push(Check {
            name: format!("encoder {enc}"),
            ok,
            required: true,
            detail: if ok { what.to_string() } else { format!("{what} missing: install Debian's libavcodec59 with libx264 (apt-get install libavcodec-extra59 or libavcodec59)") },
        });
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
        checks.push(Check {
            name: format!("decoder {dec}"),
            ok,
            required: false,
            detail: if ok {
                "present".into()
            } else {
                "missing: inputs of this kind cannot be read".into()
            },
        });
    }
    let state = registry::state_dir();
    let state_ok = std::fs::create_dir_all(&state).is_ok() && tempfile::tempfile_in(&state).is_ok();
    checks.push(Check {
        name: "state dir".into(),
        ok: state_ok,
        required: true,
        detail: format!(
            "{}{}",
            state.display(),
            if state_ok {
                " (writable)"
            } else {
                " is not writable: set VA_STATE_DIR"
            }
        ),
    });
    let py = ["python3", "python"].iter().find_map(|p| which(p));
    checks.push(Check {
        name: "python".into(),
        ok: py.is_some(),
        required: false,
        detail: py.map_or(
            "not found (only needed for ComfyUI custom nodes)".into(),
            |p| p.display().to_string(),
        ),
    });
    if !a.skip_comfyui {
        checks.push(Check {
            name: "comfyui".into(),
            ok: true,
            required: false,
            detail: "ComfyUI checks are not in this build (the engine path needs none)".into(),
        });
    }
    let missing = checks.iter().any(|c| c.required && !c.ok);
    if a.json {
        println!("{}", serde_json::json!({"ok": !missing, "checks": checks}));
    } else {
        for c in &checks {
            let mark = if c.ok {
                "ok  "
            } else if c.required {
                "FAIL"
            } else {
                "warn"
            };
            println!("{mark} {:<20} {}", c.name, c.detail);
        }
        println!(
            "{}",
            if missing {
                "doctor: required parts are missing"
            } else {
                "doctor: all required parts present"
            }
        );
    }
    Ok(if missing { MISSING } else { 0 })
}

/// Finds a program on PATH without running it.
fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
