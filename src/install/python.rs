//! ComfyUI's python and the pip installs `va install` runs with it (SPEC §8): each node
//! pack's `requirements.txt`, then `imageio-ffmpeg`, then `-U soundfile`.
//!
//! pip runs with the environment `va` got, so `PIP_INDEX_URL`, `PIP_NO_INDEX`,
//! `PIP_FIND_LINKS` and the rest of pip's own settings apply (an offline machine points pip at
//! a wheel folder that way). What was installed is recorded in
//! `state/install/python-deps.json` (the inputs and `pip freeze` afterwards), so a second
//! `va install` with the same requirements and an unchanged environment runs no pip at all.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::process::run_bounded;
use crate::error::{Error, ErrorKind, Result};

/// The packages installed after the packs' requirements, in this order, one pip call each.
pub const EXTRA_INSTALLS: [&[&str]; 2] = [&["imageio-ffmpeg"], &["-U", "soundfile"]];

/// Requirements of the packs that pip must not install: torch and friends come with ComfyUI
/// (pip would pull multi-GB CUDA wheels over them), and `pathlib` is an obsolete PyPI copy of
/// a standard module that breaks modern pythons.
pub const SKIPPED_REQUIREMENTS: [&str; 4] = ["torch", "torchvision", "torchaudio", "pathlib"];

const PIP_LIMIT: Duration = Duration::from_secs(30 * 60);
const PROBE_LIMIT: Duration = Duration::from_secs(60);

/// ComfyUI's python: `venv/bin/python`, `venv/Scripts/python.exe`, else `python` (then
/// `python3`) on PATH.
pub fn comfy_python(comfy: &Path) -> Option<PathBuf> {
    let venv = comfy.join("venv");
    [
        venv.join("bin").join("python"),
        venv.join("Scripts").join("python.exe"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .or_else(|| super::which("python"))
    .or_else(|| super::which("python3"))
}

/// Which of `modules` the python can import (found by `importlib.util.find_spec`, without
/// importing them: torch-heavy modules would take seconds).
pub fn find_modules(
    python: &Path,
    modules: &[&str],
) -> std::result::Result<BTreeMap<String, bool>, String> {
    let script = "import importlib.util, json, sys\n\
                  print(json.dumps({m: importlib.util.find_spec(m) is not None for m in sys.argv[1:]}))";
    let out = run_bounded(
        Command::new(python).arg("-c").arg(script).args(modules),
        PROBE_LIMIT,
    )
    .map_err(|e| format!("cannot run {}: {e}", python.display()))?;
    if !out.success() {
        return Err(format!("{} failed: {}", python.display(), out.tail(2)));
    }
    serde_json::from_str(out.stdout.trim())
        .map_err(|e| format!("{}: unexpected answer ({e})", python.display()))
}

/// A pack whose requirements are installed: its name and folder.
pub struct Pack<'a> {
    pub name: &'a str,
    pub dir: PathBuf,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct Stamp {
    python: String,
    inputs_sha256: String,
    freeze_sha256: String,
}

/// What the dependency step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// The pip calls made, in order.
    Installed(Vec<String>),
    Unchanged,
}

/// Installs the packs' requirements and the extra packages with `python`, unless the record
/// in `state` says this exact set is already installed in this exact environment.
pub fn install_deps(python: &Path, packs: &[Pack<'_>], state: &Path) -> Result<Done> {
    let work = state.join("install");
    std::fs::create_dir_all(&work).map_err(|e| Error::at_path(ErrorKind::Internal, &work, e))?;
    // Each pip call: (repo it is for, arguments after `pip install`).
    let mut calls: Vec<(String, Vec<String>)> = Vec::new();
    let mut inputs = Sha256::new();
    inputs.update(python.display().to_string().as_bytes());
    for pack in packs {
        let req = pack.dir.join("requirements.txt");
        let Ok(text) = std::fs::read_to_string(&req) else {
            continue;
        };
        let kept = filter_requirements(&text);
        let file = if kept == text {
            req
        } else {
            let f = work.join(format!("requirements-{}.txt", pack.name));
            crate::files::write_atomic(&f, kept.as_bytes())?;
            f
        };
        inputs.update(pack.name.as_bytes());
        inputs.update(kept.as_bytes());
        calls.push((
            pack.name.to_string(),
            vec!["-r".into(), file.display().to_string()],
        ));
    }
    for extra in EXTRA_INSTALLS {
        inputs.update(extra.join(" ").as_bytes());
        calls.push((String::new(), extra.iter().map(|s| s.to_string()).collect()));
    }
    let inputs = format!("{:x}", inputs.finalize());
    let stamp_path = work.join("python-deps.json");
    let recorded: Option<Stamp> = std::fs::read_to_string(&stamp_path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok());
    if let Some(r) = &recorded {
        if r.python == python.display().to_string()
            && r.inputs_sha256 == inputs
            && freeze(python).ok().as_deref() == Some(r.freeze_sha256.as_str())
        {
            return Ok(Done::Unchanged);
        }
    }
    let mut done = Vec::new();
    for (repo, args) in &calls {
        pip(python, repo, args)?;
        done.push(format!("pip install {}", args.join(" ")));
    }
    let stamp = Stamp {
        python: python.display().to_string(),
        inputs_sha256: inputs,
        freeze_sha256: freeze(python).map_err(|e| {
            Error::new(
                ErrorKind::PythonDependencyFailed,
                format!("pip freeze: {e}"),
            )
        })?,
    };
    crate::files::write_json_atomic(&stamp_path, &stamp)?;
    Ok(Done::Installed(done))
}

/// True when `state/install/python-deps.json` records an install with this python.
pub fn recorded_for(python: &Path, state: &Path) -> bool {
    std::fs::read_to_string(state.join("install").join("python-deps.json"))
        .ok()
        .and_then(|t| serde_json::from_str::<Stamp>(&t).ok())
        .is_some_and(|s| s.python == python.display().to_string())
}

fn pip(python: &Path, repo: &str, args: &[String]) -> Result<()> {
    let mut cmd = Command::new(python);
    cmd.args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(args);
    let shown = format!("pip install {}", args.join(" "));
    let for_repo = if repo.is_empty() {
        String::new()
    } else {
        format!(" for repo {repo}")
    };
    let out = run_bounded(&mut cmd, PIP_LIMIT).map_err(|e| {
        Error::new(
            ErrorKind::PythonDependencyFailed,
            format!(
                "{shown}{for_repo}: cannot run python {}: {e}",
                python.display()
            ),
        )
    })?;
    if !out.success() {
        let code = out
            .code
            .map_or_else(|| "no exit code".into(), |c| format!("exit {c}"));
        return Err(Error::new(
            ErrorKind::PythonDependencyFailed,
            format!(
                "{shown}{for_repo} failed with python {} ({code}): {}",
                python.display(),
                out.tail(3)
            ),
        )
        .with_hint(
            "fix the python environment (or the pack's requirements.txt) and run va install again",
        ));
    }
    Ok(())
}

/// SHA-256 of `pip freeze --all`: a change means someone changed the environment.
fn freeze(python: &Path) -> std::result::Result<String, String> {
    let out = run_bounded(
        Command::new(python).args([
            "-m",
            "pip",
            "freeze",
            "--all",
            "--disable-pip-version-check",
        ]),
        PROBE_LIMIT,
    )
    .map_err(|e| e.to_string())?;
    if !out.success() {
        return Err(out.tail(2));
    }
    Ok(format!("{:x}", Sha256::digest(out.stdout.as_bytes())))
}

/// The requirements text without the lines naming [`SKIPPED_REQUIREMENTS`].
pub fn filter_requirements(text: &str) -> String {
    let kept: Vec<&str> = text
        .lines()
        .filter(|line| {
            let name = line
                .trim()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                .collect::<String>()
                .to_ascii_lowercase()
                .replace('_', "-");
            !SKIPPED_REQUIREMENTS.contains(&name.as_str())
        })
        .collect();
    if kept.len() == text.lines().count() {
        return text.to_string();
    }
    kept.iter().map(|l| format!("{l}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn torch_and_pathlib_are_left_to_comfyui() {
        let text = "librosa>=0.9\ntorch\ntorchvision==0.17 ; python_version>'3'\nTorchAudio\npathlib\nsoundfile\n# torch comment\ntorchsde\n";
        assert_eq!(
            filter_requirements(text),
            "librosa>=0.9\nsoundfile\n# torch comment\ntorchsde\n"
        );
        let plain = "numpy\nscipy\n";
        assert_eq!(filter_requirements(plain), plain);
        assert_eq!(filter_requirements("numpy"), "numpy");
    }
}
