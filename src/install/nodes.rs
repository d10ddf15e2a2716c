//! The ComfyUI custom nodes: the two git packs (`ComfyUI-VideoHelperSuite`,
//! `ComfyUI_wav2lip`), cloned or updated with the `git` program, and the project's own
//! `vidax_wav2lip`, copied from `comfy_nodes/`. Every target is strictly under
//! `<COMFYUI_DIR>/custom_nodes/`: a name with a path in it, or a folder that resolves
//! elsewhere (a symlink), is refused.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::assets::NodePack;
use super::process::run_bounded;
use crate::error::{Error, ErrorKind, Result};

pub const VHS_PACK: &str = "ComfyUI-VideoHelperSuite";
pub const WAV2LIP_PACK: &str = "ComfyUI_wav2lip";
pub const VIDAX_NODE: &str = "vidax_wav2lip";

/// Every custom node folder the ComfyUI stage needs.
pub const REQUIRED_NODES: [&str; 3] = [VHS_PACK, WAV2LIP_PACK, VIDAX_NODE];

/// The two weights at their exact paths under `COMFYUI_DIR` (asset id, path).
pub const WEIGHTS: [(&str, &str); 2] = [
    (
        "wav2lip_gan",
        "custom_nodes/ComfyUI_wav2lip/Wav2Lip/checkpoints/wav2lip_gan.pth",
    ),
    (
        "s3fd",
        "custom_nodes/ComfyUI_wav2lip/Wav2Lip/face_detection/detection/sfd/s3fd.pth",
    ),
];

/// The packs when the assets manifest names none.
pub fn default_packs() -> Vec<NodePack> {
    vec![
        NodePack {
            name: VHS_PACK.into(),
            git: "https://github.com/Kosinkadink/ComfyUI-VideoHelperSuite.git".into(),
        },
        NodePack {
            name: WAV2LIP_PACK.into(),
            git: "https://github.com/ShmuelRonen/ComfyUI_wav2lip.git".into(),
        },
    ]
}

/// Git clones and pulls may take long on a slow line, but not forever.
const GIT_LIMIT: Duration = Duration::from_secs(30 * 60);

pub fn custom_nodes_dir(comfy: &Path) -> PathBuf {
    comfy.join("custom_nodes")
}

/// `<COMFYUI_DIR>/custom_nodes/<name>`, refused unless `name` is one folder name and the
/// folder stays inside `custom_nodes/`. With `create`, `custom_nodes/` is made.
pub fn target(comfy: &Path, name: &str, create: bool) -> Result<PathBuf> {
    let refuse = |why: String| {
        Error::new(
            ErrorKind::PythonDependencyFailed,
            format!("custom node {name:?}: {why}"),
        )
    };
    if name.contains(['/', '\\']) || Path::new(name).components().count() != 1 {
        return Err(refuse(format!(
            "not a folder name: targets must be directly under {}",
            custom_nodes_dir(comfy).display()
        )));
    }
    let dir = custom_nodes_dir(comfy);
    if create {
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::at_path(ErrorKind::Internal, &dir, format!("cannot create: {e}"))
        })?;
    }
    super::confined(&dir, Path::new(name), false).map_err(refuse)
}

/// A node folder ComfyUI would load: a folder with an `__init__.py`.
pub fn is_installed(dir: &Path) -> bool {
    dir.join("__init__.py").is_file()
}

/// What a node step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Cloned,
    Updated(String),
    Unchanged,
}

/// A pack's `git` entry as git gets it: a URL as it is, a path made absolute against the
/// manifest's folder (so a local mirror can be named relative to the manifest).
pub fn git_source(git: &str, manifest_dir: &Path) -> String {
    let is_url = git.contains("://") || git.starts_with("git@") || git.starts_with("file:");
    if is_url || Path::new(git).is_absolute() {
        git.to_string()
    } else {
        manifest_dir.join(git).display().to_string()
    }
}

/// Clones the pack into its target, or fast-forwards an existing checkout from the
/// configured source. A target that exists but is not a git checkout is left alone and
/// reported.
pub fn clone_or_update(pack: &NodePack, comfy: &Path, manifest_dir: &Path) -> Result<Done> {
    let dir = target(comfy, &pack.name, true)?;
    let source = git_source(&pack.git, manifest_dir);
    if !dir.exists() {
        git(
            &pack.name,
            &source,
            None,
            &["clone", "--quiet", "--", &source, &path_arg(&dir)],
        )?;
        return Ok(Done::Cloned);
    }
    if !dir.join(".git").exists() {
        return Err(Error::at_path(
            ErrorKind::PythonDependencyFailed,
            &dir,
            format!("exists but is not a git checkout of {source}"),
        )
        .with_hint("move the folder away and run va install again"));
    }
    let before = git(&pack.name, &source, Some(&dir), &["rev-parse", "HEAD"])?;
    git(
        &pack.name,
        &source,
        Some(&dir),
        &["pull", "--ff-only", "--quiet", &source],
    )?;
    let after = git(&pack.name, &source, Some(&dir), &["rev-parse", "HEAD"])?;
    Ok(if before == after {
        Done::Unchanged
    } else {
        Done::Updated(format!("{} -> {}", short(&before), short(&after)))
    })
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

/// Runs git (never prompting for credentials) and returns its trimmed stdout.
fn git(pack: &str, source: &str, cwd: Option<&Path>, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new("git");
    if let Some(d) = cwd {
        cmd.arg("-C").arg(d);
    }
    cmd.args(args).env("GIT_TERMINAL_PROMPT", "0");
    let what = format!("git {}", args.first().copied().unwrap_or(""));
    let failed = |why: String| {
        Error::new(
            ErrorKind::PythonDependencyFailed,
            format!("custom node {pack} (repo {source}): {what} failed: {why}"),
        )
    };
    let out = run_bounded(&mut cmd, GIT_LIMIT)
        .map_err(|e| failed(format!("cannot run git ({e})")).with_hint("install git"))?;
    if !out.success() {
        return Err(failed(out.tail(3)));
    }
    Ok(out.stdout.trim().to_string())
}

/// Copies `comfy_nodes/vidax_wav2lip` (without caches) to its target; files already equal are
/// not touched, files the source no longer has are removed. Returns the target and how many
/// files changed.
pub fn copy_vidax_node(comfy: &Path, resources: &Path) -> Result<(PathBuf, usize)> {
    let src = resources.join("comfy_nodes").join(VIDAX_NODE);
    if !is_installed(&src) {
        return Err(Error::at_path(
            ErrorKind::InputNotFound,
            &src,
            "the vidax_wav2lip node sources are missing",
        )
        .with_hint("set VA_RESOURCE_DIR to the vidax checkout"));
    }
    let dst = target(comfy, VIDAX_NODE, true)?;
    let mut changed = 0;
    let mut wanted = std::collections::HashSet::new();
    for rel in node_files(&src)? {
        let from = src.join(&rel);
        let to = dst.join(&rel);
        let bytes =
            std::fs::read(&from).map_err(|e| Error::at_path(ErrorKind::Internal, &from, e))?;
        if std::fs::read(&to).ok().as_deref() != Some(bytes.as_slice()) {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| Error::at_path(ErrorKind::Internal, parent, e))?;
            }
            crate::files::write_atomic(&to, &bytes)?;
            changed += 1;
        }
        wanted.insert(rel);
    }
    if dst.is_dir() {
        for rel in node_files(&dst)? {
            if !wanted.contains(&rel) {
                let stale = dst.join(&rel);
                std::fs::remove_file(&stale)
                    .map_err(|e| Error::at_path(ErrorKind::Internal, &stale, e))?;
                changed += 1;
            }
        }
    }
    Ok((dst, changed))
}

/// The files of a node folder, relative to it, without Python caches.
fn node_files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries =
            std::fs::read_dir(&dir).map_err(|e| Error::at_path(ErrorKind::Internal, &dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| Error::at_path(ErrorKind::Internal, &dir, e))?;
            let name = entry.file_name();
            let name_s = name.to_string_lossy();
            if name_s == "__pycache__" || name_s == ".pytest_cache" || name_s.ends_with(".pyc") {
                continue;
            }
            let kind = entry
                .file_type()
                .map_err(|e| Error::at_path(ErrorKind::Internal, &entry.path(), e))?;
            if kind.is_dir() {
                stack.push(rel.join(&name));
            } else if kind.is_file() {
                out.push(rel.join(&name));
            }
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_stay_directly_under_custom_nodes() {
        let d = tempfile::tempdir().unwrap();
        let comfy = d.path().join("ComfyUI");
        for bad in ["../x", "a/b", "..", "/abs", "a\\b"] {
            let e = target(&comfy, bad, true).unwrap_err();
            assert_eq!(e.kind, ErrorKind::PythonDependencyFailed, "{bad}");
        }
        assert_eq!(
            target(&comfy, "ComfyUI_wav2lip", true).unwrap(),
            comfy.join("custom_nodes/ComfyUI_wav2lip")
        );
        #[cfg(unix)]
        {
            let outside = d.path().join("elsewhere");
            std::fs::create_dir_all(&outside).unwrap();
            std::os::unix::fs::symlink(&outside, comfy.join("custom_nodes/evil")).unwrap();
            let e = target(&comfy, "evil", true).unwrap_err();
            assert!(e.message.contains("outside"), "{e}");
        }
    }

    #[test]
    fn git_sources_resolve_relative_paths_only() {
        let m = Path::new("/m");
        assert_eq!(git_source("https://h/r.git", m), "https://h/r.git");
        assert_eq!(git_source("file:///srv/r", m), "file:///srv/r");
        assert_eq!(git_source("git@h:r.git", m), "git@h:r.git");
        assert_eq!(git_source("/srv/r", m), "/srv/r");
        assert_eq!(git_source("mirror/r", m), "/m/mirror/r");
    }
}
