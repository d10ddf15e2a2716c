//! The assets manifest (`assets.json`, docs/ASSETS.md): where it is found, what it may say,
//! and for each asset whether it is in place (check) or how to put it there (ensure).

use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::download::{resolve_source, Fetcher};
use super::Check;
use crate::error::{Error, ErrorKind, Result};
use crate::files::sha256_file;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub allow_insecure_http: bool,
    #[serde(default)]
    pub assets: Vec<Asset>,
    /// The git packs cloned into `<COMFYUI_DIR>/custom_nodes/`; absent means the two defaults.
    #[serde(default)]
    pub custom_nodes: Option<Vec<NodePack>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Asset {
    pub id: String,
    /// `https://…`, `http://…` (only with `allow_insecure_http`), `file://…`, or a path
    /// relative to the manifest's folder.
    pub url: String,
    pub sha256: String,
    /// Relative to the state dir, or `comfyui:<path>` relative to `COMFYUI_DIR`.
    pub dest: String,
    #[serde(default)]
    pub on_missing: OnMissing,
    #[serde(default)]
    pub on_hash_mismatch: OnHashMismatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissing {
    #[default]
    Download,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnHashMismatch {
    #[default]
    Fail,
    Redownload,
}

/// One git pack of custom nodes: its folder name under `custom_nodes/` and where to clone it
/// from (a URL git understands, or a path relative to the manifest's folder).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodePack {
    pub name: String,
    pub git: String,
}

/// Where an asset goes: the root it is relative to, and the relative path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    State(PathBuf),
    Comfy(PathBuf),
}

impl Dest {
    pub fn parse(s: &str) -> std::result::Result<Dest, String> {
        let (comfy, rel) = match s.strip_prefix("comfyui:") {
            Some(r) => (true, r),
            None => (false, s),
        };
        let rel = PathBuf::from(rel);
        if !is_plain_relative(&rel) {
            return Err(format!(
                "{s:?} must be a relative path without \"..\" (relative to the state dir, or \"comfyui:\" + a path relative to COMFYUI_DIR)"
            ));
        }
        Ok(if comfy {
            Dest::Comfy(rel)
        } else {
            Dest::State(rel)
        })
    }
}

/// Only normal components: no root, no `..`, no `.`, not empty.
pub fn is_plain_relative(p: &Path) -> bool {
    p.components().next().is_some() && p.components().all(|c| matches!(c, Component::Normal(_)))
}

/// A manifest with the file it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub path: PathBuf,
    pub manifest: Manifest,
}

impl Loaded {
    /// The folder relative sources resolve against.
    pub fn dir(&self) -> PathBuf {
        self.path
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
    }

    pub fn packs(&self) -> Vec<NodePack> {
        self.manifest
            .custom_nodes
            .clone()
            .unwrap_or_else(super::nodes::default_packs)
    }
}

/// `VIDAX_ASSETS_CONFIG` → `state/config/assets.json` → the shipped `config/assets.json`.
/// A `VIDAX_ASSETS_CONFIG` that names no file is an error, not a silent fallback.
pub fn manifest_path() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("VIDAX_ASSETS_CONFIG").filter(|v| !v.is_empty()) {
        let p = PathBuf::from(p);
        if !p.is_file() {
            return Err(Error::at_path(
                ErrorKind::InputNotFound,
                &p,
                "VIDAX_ASSETS_CONFIG names no file",
            ));
        }
        return Ok(p);
    }
    let candidates = [
        super::state_config_dir().join("assets.json"),
        super::resource_dir().join("config").join("assets.json"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .ok_or_else(|| {
            Error::new(
                ErrorKind::InputNotFound,
                format!(
                    "no assets manifest: none of VIDAX_ASSETS_CONFIG, {}, {}",
                    candidates[0].display(),
                    candidates[1].display()
                ),
            )
            .with_hint(
                "set VA_RESOURCE_DIR to the vidax checkout, or VIDAX_ASSETS_CONFIG to a manifest",
            )
        })
}

/// Finds, reads and validates the manifest (`VALIDATION_FAILED` names the file and field).
pub fn load() -> Result<Loaded> {
    let path = manifest_path()?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::at_path(ErrorKind::InputNotFound, &path, e))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .map_err(|e| Error::at_path(ErrorKind::ValidationFailed, &path, e))?;
    let problems = validate(&manifest);
    if !problems.is_empty() {
        return Err(
            Error::at_path(ErrorKind::ValidationFailed, &path, problems.join("; "))
                .with_hint("the manifest format is in docs/ASSETS.md"),
        );
    }
    Ok(Loaded { path, manifest })
}

fn validate(m: &Manifest) -> Vec<String> {
    let mut problems = Vec::new();
    let mut ids = std::collections::HashSet::new();
    for (i, a) in m.assets.iter().enumerate() {
        if a.id.trim().is_empty() {
            problems.push(format!("assets[{i}].id: must not be empty"));
        } else if !ids.insert(a.id.as_str()) {
            problems.push(format!("assets[{i}].id: {:?} appears twice", a.id));
        }
        if a.sha256.len() != 64 || !a.sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            problems.push(format!(
                "assets[{i}].sha256: must be 64 hex digits (got {:?})",
                a.sha256
            ));
        }
        if let Err(e) = Dest::parse(&a.dest) {
            problems.push(format!("assets[{i}].dest: {e}"));
        }
        if a.url.trim().is_empty() {
            problems.push(format!("assets[{i}].url: must not be empty"));
        }
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in m.custom_nodes.iter().flatten().enumerate() {
        let single = Path::new(&p.name).components().count() == 1
            && is_plain_relative(Path::new(&p.name))
            && !p.name.contains(['/', '\\']);
        if !single {
            problems.push(format!(
                "custom_nodes[{i}].name: {:?} must be one folder name under custom_nodes/",
                p.name
            ));
        } else if p.name == super::nodes::VIDAX_NODE {
            problems.push(format!(
                "custom_nodes[{i}].name: {:?} is the project's own node, copied from comfy_nodes/",
                p.name
            ));
        } else if !names.insert(p.name.as_str()) {
            problems.push(format!(
                "custom_nodes[{i}].name: {:?} appears twice",
                p.name
            ));
        }
        if p.git.trim().is_empty() {
            problems.push(format!("custom_nodes[{i}].git: must not be empty"));
        }
    }
    problems
}

/// How an asset's destination looks now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Present,
    Missing,
    /// There, with this other SHA-256.
    Mismatch(String),
}

pub fn state_of(asset: &Asset, path: &Path) -> Result<State> {
    if !path.exists() {
        return Ok(State::Missing);
    }
    let actual = sha256_file(path)?;
    Ok(if actual.eq_ignore_ascii_case(&asset.sha256) {
        State::Present
    } else {
        State::Mismatch(actual)
    })
}

/// The destination of `asset` under the state dir or `comfy`; `None` for a `comfyui:` asset
/// without a `COMFYUI_DIR`. With `create`, the parent folders are made; the path is refused
/// when it would leave its root (through a symlink).
pub fn dest_path(
    asset: &Asset,
    state: &Path,
    comfy: Option<&Path>,
    create: bool,
) -> Result<Option<PathBuf>> {
    let dest = Dest::parse(&asset.dest).map_err(|e| {
        Error::new(
            ErrorKind::ValidationFailed,
            format!("asset {}: dest {e}", asset.id),
        )
    })?;
    let (root, rel) = match &dest {
        Dest::State(rel) => (state, rel),
        Dest::Comfy(rel) => match comfy {
            Some(c) => (c, rel),
            None => return Ok(None),
        },
    };
    super::confined(root, rel, create).map(Some).map_err(|e| {
        Error::new(
            ErrorKind::ValidationFailed,
            format!("asset {}: {e}", asset.id),
        )
    })
}

pub fn is_comfy(asset: &Asset) -> bool {
    matches!(Dest::parse(&asset.dest), Ok(Dest::Comfy(_)))
}

/// What `ensure` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    Unchanged,
    Downloaded(u64),
    Skipped(String),
}

/// Puts `asset` at `path` as the manifest says: verified in place → unchanged; missing →
/// `on_missing`; another hash → `on_hash_mismatch`.
pub fn ensure(asset: &Asset, loaded: &Loaded, fetcher: &Fetcher, path: &Path) -> Result<Done> {
    let fetch = || -> Result<Done> {
        let source = resolve_source(&asset.url, &loaded.dir())?;
        fetcher
            .fetch(&asset.id, &source, path, &asset.sha256)
            .map(Done::Downloaded)
    };
    match state_of(asset, path)? {
        State::Present => Ok(Done::Unchanged),
        State::Missing => match asset.on_missing {
            OnMissing::Download => fetch(),
            OnMissing::Skip => Ok(Done::Skipped("missing; on_missing is skip".into())),
            OnMissing::Fail => Err(Error::at_path(
                ErrorKind::InputNotFound,
                path,
                format!("asset {} is missing and its on_missing is fail", asset.id),
            )
            .with_hint(format!(
                "put the file there by hand (SHA-256 {}), then run va install again",
                asset.sha256
            ))),
        },
        State::Mismatch(actual) => match asset.on_hash_mismatch {
            OnHashMismatch::Redownload => fetch(),
            OnHashMismatch::Fail => Err(Error::at_path(
                ErrorKind::HashMismatch,
                path,
                format!(
                    "asset {} has SHA-256 {actual}, the manifest expects {} (on_hash_mismatch is fail)",
                    asset.id, asset.sha256
                ),
            )
            .with_hint("remove the file, or set on_hash_mismatch to redownload")),
        },
    }
}

/// The install-test line for one asset.
pub fn check(asset: &Asset, loaded: &Loaded, path: Option<&Path>, why_skipped: &str) -> Check {
    let name = format!("asset {}", asset.id);
    let Some(path) = path else {
        return Check::skipped("asset", name, why_skipped.to_string());
    };
    let source = resolve_source(&asset.url, &loaded.dir())
        .map_or_else(|_| asset.url.clone(), |s| s.to_string());
    match state_of(asset, path) {
        Ok(State::Present) => Check::required(
            "asset",
            name,
            true,
            format!("{} (SHA-256 verified)", path.display()),
        ),
        Ok(State::Missing) => match asset.on_missing {
            OnMissing::Download => {
                Check::required("asset", name, false, format!("{} missing", path.display()))
                    .with_action(format!("download {source} -> {}", path.display()))
            }
            OnMissing::Skip => Check::optional(
                "asset",
                name,
                false,
                format!("{} missing (on_missing is skip)", path.display()),
            ),
            OnMissing::Fail => Check::required(
                "asset",
                name,
                false,
                format!("{} missing (on_missing is fail)", path.display()),
            )
            .with_action(format!(
                "none: put the file there by hand (SHA-256 {})",
                asset.sha256
            )),
        },
        Ok(State::Mismatch(actual)) => {
            let c = Check::required(
                "asset",
                name,
                false,
                format!(
                    "{} has SHA-256 {actual}, expected {}",
                    path.display(),
                    asset.sha256
                ),
            );
            match asset.on_hash_mismatch {
                OnHashMismatch::Redownload => {
                    c.with_action(format!("download {source} -> {} again", path.display()))
                }
                OnHashMismatch::Fail => {
                    c.with_action("none: on_hash_mismatch is fail; remove or replace the file")
                }
            }
        }
        Err(e) => Check::required("asset", name, false, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_must_stay_relative() {
        assert_eq!(
            Dest::parse("models/x.pth").unwrap(),
            Dest::State(PathBuf::from("models/x.pth"))
        );
        assert_eq!(
            Dest::parse("comfyui:custom_nodes/a/b.pth").unwrap(),
            Dest::Comfy(PathBuf::from("custom_nodes/a/b.pth"))
        );
        for bad in [
            "../x",
            "/etc/x",
            "comfyui:../x",
            "comfyui:/x",
            "a/../../b",
            "",
            "comfyui:",
        ] {
            assert!(Dest::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn validation_names_each_field() {
        let m: Manifest = serde_json::from_value(serde_json::json!({
            "assets": [
                {"id": "a", "url": "x", "sha256": "12", "dest": "../a"},
                {"id": "a", "url": "", "sha256": "0000000000000000000000000000000000000000000000000000000000000000", "dest": "ok"}
            ],
            "custom_nodes": [{"name": "../evil", "git": "x"}]
        }))
        .unwrap();
        let p = validate(&m).join("\n");
        for want in [
            "assets[0].sha256",
            "assets[0].dest",
            "assets[1].id",
            "assets[1].url",
            "custom_nodes[0].name",
        ] {
            assert!(p.contains(want), "{want} not in {p}");
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: std::result::Result<Manifest, _> =
            serde_json::from_str(r#"{"assets": [], "allow_insecure": true}"#);
        assert!(r.is_err());
    }
}

#[cfg(test)]
mod shipped {
    use super::*;
    use crate::install::nodes::{default_packs, WEIGHTS};

    #[test]
    fn the_shipped_manifest_puts_both_weights_at_their_exact_paths() {
        let m: Manifest = serde_json::from_str(include_str!("../../config/assets.json")).unwrap();
        assert!(validate(&m).is_empty(), "{:?}", validate(&m));
        assert!(!m.allow_insecure_http);
        for (id, rel) in WEIGHTS {
            let a = m.assets.iter().find(|a| a.id == id).expect(id);
            assert_eq!(a.dest, format!("comfyui:{rel}"));
            assert!(a.url.starts_with("https://"), "{}", a.url);
            assert_eq!(a.on_missing, OnMissing::Download);
            assert_eq!(a.on_hash_mismatch, OnHashMismatch::Fail);
        }
        let names: Vec<String> = m
            .custom_nodes
            .unwrap()
            .into_iter()
            .map(|p| p.name)
            .collect();
        let defaults: Vec<String> = default_packs().into_iter().map(|p| p.name).collect();
        assert_eq!(names, defaults);
    }
}
