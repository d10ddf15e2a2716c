//! `va install-test` (what is missing and what `install` would do, changing nothing) and
//! `va install` (the ordered setup of SPEC §8, idempotent: a second run changes nothing and
//! says so).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::assets::{self, Loaded};
use super::download::Fetcher;
use super::{doctor, nodes, python, Check, Report, Settings, CONFIG_FILES};
use crate::error::{Error, ErrorKind, Result};

/// What the user asked for, resolved once.
#[derive(Debug, Clone)]
pub struct Options {
    pub skip_comfyui: bool,
    pub comfy_nodes: bool,
    pub comfyui_url: Option<String>,
}

/// The doctor's options from the flags and `vidax.json`.
pub fn doctor_options(
    skip_flag: bool,
    url_flag: Option<String>,
    settings: &Settings,
) -> doctor::Options {
    let skip = skip_reason(skip_flag, settings);
    let packs = assets::load().map_or_else(|_| nodes::default_packs(), |l| l.packs());
    doctor::Options {
        comfy_local: skip.clone().map_or(Ok(()), Err),
        weights: true,
        comfy_server: match skip {
            Some(why) => Err(why),
            None => Ok(server_url(url_flag, settings)),
        },
        packs,
        config_problem: settings.problem.clone(),
    }
}

fn skip_reason(skip_flag: bool, settings: &Settings) -> Option<String> {
    if skip_flag {
        Some("skipped (--skip-comfyui)".into())
    } else if settings.skip_comfyui {
        Some(format!(
            "skipped (skip_comfyui=true in {})",
            settings
                .path
                .as_deref()
                .map_or_else(|| "vidax.json".into(), |p| p.display().to_string())
        ))
    } else {
        None
    }
}

fn server_url(flag: Option<String>, settings: &Settings) -> String {
    flag.or_else(|| settings.comfyui_url.clone())
        .unwrap_or_else(|| super::DEFAULT_COMFYUI_URL.to_string())
}

const NODES_OFF: &str =
    "custom nodes turned off (--no-comfy-nodes or VA_INSTALL_COMFY_NODES=false)";

/// `va install-test`: the doctor's checks, then the configs, the assets manifest and every
/// asset, the python dependencies; each missing item with what `install` would do.
pub fn install_test(o: &Options) -> Report {
    let settings = Settings::load();
    let mut d = doctor_options(o.skip_comfyui, o.comfyui_url.clone(), &settings);
    d.weights = false;
    if !o.comfy_nodes {
        d.comfy_local = Err(NODES_OFF.into());
    }
    let comfy_local = d.comfy_local.is_ok();
    let (mut checks, hints) = doctor::checks(&d);

    let state = crate::files::state_dir();
    let examples = super::resource_dir().join("config");
    for name in CONFIG_FILES {
        let target = state.join("config").join(name);
        let example = examples.join(name);
        checks.push(if target.is_file() {
            Check::required("config", name, true, target.display().to_string())
        } else if example.is_file() {
            Check::required(
                "config",
                name,
                false,
                format!("{} missing", target.display()),
            )
            .with_action(format!(
                "copy {} -> {}",
                example.display(),
                target.display()
            ))
        } else {
            Check::required(
                "config",
                name,
                false,
                format!(
                    "{} missing, and so is its example {} (set VA_RESOURCE_DIR)",
                    target.display(),
                    example.display()
                ),
            )
        });
    }

    let comfy = super::comfyui_dir().filter(|_| comfy_local);
    match assets::load() {
        Err(e) => checks.push(Check::required(
            "asset",
            "assets manifest",
            false,
            e.to_string(),
        )),
        Ok(loaded) => {
            checks.push(Check::required(
                "asset",
                "assets manifest",
                true,
                format!(
                    "{} ({} assets)",
                    loaded.path.display(),
                    loaded.manifest.assets.len()
                ),
            ));
            let why = if comfy_local {
                "needs COMFYUI_DIR".to_string()
            } else {
                d.comfy_local.clone().err().unwrap_or_default()
            };
            for a in &loaded.manifest.assets {
                let c = match assets::dest_path(a, &state, comfy.as_deref(), false) {
                    Ok(path) => assets::check(a, &loaded, path.as_deref(), &why),
                    Err(e) => {
                        Check::required("asset", format!("asset {}", a.id), false, e.to_string())
                    }
                };
                checks.push(c);
            }
        }
    }

    if let Some(c) = &comfy {
        if let Some(py) = python::comfy_python(c) {
            let recorded = python::recorded_for(&py, &state);
            let c = Check::optional(
                "comfyui",
                "python dependencies",
                recorded,
                if recorded {
                    format!("installed by va install with {}", py.display())
                } else {
                    format!("not installed by va install with {}", py.display())
                },
            );
            checks.push(if recorded {
                c
            } else {
                c.with_action(format!(
                    "pip install -r <pack>/requirements.txt for each pack, then imageio-ffmpeg, then -U soundfile, with {}",
                    py.display()
                ))
            });
        }
    }
    Report::new("install-test", checks, hints)
}

/// What one install step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Created,
    Copied,
    Kept,
    Unchanged,
    Downloaded,
    Cloned,
    Updated,
    Installed,
    Skipped,
}

impl Action {
    fn changes(self) -> bool {
        matches!(
            self,
            Action::Created
                | Action::Copied
                | Action::Downloaded
                | Action::Cloned
                | Action::Updated
                | Action::Installed
        )
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub group: &'static str,
    pub name: String,
    pub action: Action,
    pub detail: String,
}

/// The result of `va install`: its steps, whether any changed something, and the doctor's
/// report afterwards (without the live server check).
#[derive(Debug, Serialize)]
pub struct Installed {
    pub command: &'static str,
    pub ok: bool,
    pub changed: bool,
    pub steps: Vec<Step>,
    pub hints: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub doctor: Option<Report>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<serde_json::Value>,
}

/// One install at a time per state dir (the API may be asked twice): a second one fails at
/// once instead of interleaving clones, downloads and pip calls. The OS drops the lock when
/// the process ends, however it ends.
fn install_lock(state: &Path) -> Result<crate::files::FileLock> {
    let path = state.join("install.lock");
    crate::files::FileLock::try_exclusive(&path)?.ok_or_else(|| {
        Error::at_path(
            ErrorKind::Internal,
            &path,
            "another va install is running with this state dir",
        )
        .with_hint("wait for it to finish, then run va install again")
    })
}

/// Collects the steps and prints each as it happens (unless the output is JSON).
pub struct Installer {
    steps: Vec<Step>,
    print: bool,
}

impl Installer {
    pub fn new(print: bool) -> Installer {
        Installer {
            steps: Vec::new(),
            print,
        }
    }

    fn step(
        &mut self,
        group: &'static str,
        name: impl Into<String>,
        action: Action,
        detail: impl Into<String>,
    ) {
        let s = Step {
            group,
            name: name.into(),
            action,
            detail: detail.into(),
        };
        if self.print {
            let action = serde_json::to_value(s.action)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            println!("{action:<10} {:<8} {}: {}", s.group, s.name, s.detail);
        }
        tracing::info!(group = s.group, name = %s.name, action = ?s.action, "{}", s.detail);
        self.steps.push(s);
    }

    /// Runs the install; on failure the steps done so far stay in `self`.
    pub fn run(&mut self, o: &Options) -> Result<()> {
        // Everything the custom-node block needs is checked before anything is written.
        let comfy = if o.comfy_nodes {
            let c = super::comfyui_dir().ok_or_else(|| {
                Error::new(
                    ErrorKind::Usage,
                    "COMFYUI_DIR is not set: the custom-node block installs under <COMFYUI_DIR>/custom_nodes/",
                )
                .with_hint("set COMFYUI_DIR to your ComfyUI folder, or pass --no-comfy-nodes (VA_INSTALL_COMFY_NODES=false)")
            })?;
            if !c.is_dir() {
                return Err(Error::at_path(
                    ErrorKind::InputNotFound,
                    &c,
                    "COMFYUI_DIR is not a folder",
                ));
            }
            Some(c)
        } else {
            None
        };

        let state = crate::files::state_dir();
        let config = state.join("config");
        let existed = config.is_dir();
        std::fs::create_dir_all(&config)
            .map_err(|e| Error::at_path(ErrorKind::Internal, &config, e))?;
        self.step(
            "state",
            "state dir",
            if existed {
                Action::Unchanged
            } else {
                Action::Created
            },
            state.display().to_string(),
        );
        let _lock = install_lock(&state)?;
        self.copy_configs(&config)?;

        let loaded = assets::load()?;
        self.step(
            "asset",
            "assets manifest",
            Action::Unchanged,
            loaded.path.display().to_string(),
        );
        let fetcher = Fetcher::new(loaded.manifest.allow_insecure_http, self.print)?;
        for a in loaded
            .manifest
            .assets
            .iter()
            .filter(|a| !assets::is_comfy(a))
        {
            self.asset(a, &loaded, &fetcher, &state, None)?;
        }

        let Some(comfy) = comfy else {
            self.step("comfyui", "custom nodes", Action::Skipped, NODES_OFF);
            for a in loaded
                .manifest
                .assets
                .iter()
                .filter(|a| assets::is_comfy(a))
            {
                self.step("asset", a.id.clone(), Action::Skipped, NODES_OFF);
            }
            return Ok(());
        };
        self.custom_nodes(&comfy, &loaded, &fetcher, &state)
    }

    fn copy_configs(&mut self, config: &Path) -> Result<()> {
        let examples = super::resource_dir().join("config");
        for name in CONFIG_FILES {
            let example = examples.join(name);
            let target = config.join(name);
            let want = std::fs::read(&example).map_err(|e| {
                Error::at_path(
                    ErrorKind::InputNotFound,
                    &example,
                    format!("example config: {e}"),
                )
                .with_hint("set VA_RESOURCE_DIR to the vidax checkout")
            })?;
            match std::fs::read(&target) {
                Ok(have) if have == want => self.step(
                    "config",
                    name,
                    Action::Unchanged,
                    target.display().to_string(),
                ),
                Ok(_) => self.step(
                    "config",
                    name,
                    Action::Kept,
                    format!(
                        "{} differs from the example: left as it is",
                        target.display()
                    ),
                ),
                Err(_) => {
                    crate::files::write_atomic(&target, &want)?;
                    self.step(
                        "config",
                        name,
                        Action::Copied,
                        format!("{} -> {}", example.display(), target.display()),
                    );
                }
            }
        }
        Ok(())
    }

    fn asset(
        &mut self,
        a: &assets::Asset,
        loaded: &Loaded,
        fetcher: &Fetcher,
        state: &Path,
        comfy: Option<&Path>,
    ) -> Result<()> {
        let path = assets::dest_path(a, state, comfy, true)?.ok_or_else(|| {
            Error::new(
                ErrorKind::Usage,
                format!("asset {}: needs COMFYUI_DIR", a.id),
            )
        })?;
        match assets::ensure(a, loaded, fetcher, &path)? {
            assets::Done::Unchanged => self.step(
                "asset",
                a.id.clone(),
                Action::Unchanged,
                format!("{} (SHA-256 verified)", path.display()),
            ),
            assets::Done::Downloaded(n) => self.step(
                "asset",
                a.id.clone(),
                Action::Downloaded,
                format!("{} ({n} bytes, SHA-256 verified)", path.display()),
            ),
            assets::Done::Skipped(why) => self.step(
                "asset",
                a.id.clone(),
                Action::Skipped,
                format!("{}: {why}", path.display()),
            ),
        }
        Ok(())
    }

    fn custom_nodes(
        &mut self,
        comfy: &Path,
        loaded: &Loaded,
        fetcher: &Fetcher,
        state: &Path,
    ) -> Result<()> {
        let packs = loaded.packs();
        let mut pack_dirs: Vec<(String, PathBuf)> = Vec::new();
        for pack in &packs {
            let dir = nodes::target(comfy, &pack.name, true)?;
            let source = nodes::git_source(&pack.git, &loaded.dir());
            match nodes::clone_or_update(pack, comfy, &loaded.dir())? {
                nodes::Done::Cloned => self.step(
                    "comfyui",
                    pack.name.clone(),
                    Action::Cloned,
                    format!("{source} -> {}", dir.display()),
                ),
                nodes::Done::Updated(revs) => self.step(
                    "comfyui",
                    pack.name.clone(),
                    Action::Updated,
                    format!("{} ({revs})", dir.display()),
                ),
                nodes::Done::Unchanged => self.step(
                    "comfyui",
                    pack.name.clone(),
                    Action::Unchanged,
                    format!("{} (up to date with {source})", dir.display()),
                ),
            }
            pack_dirs.push((pack.name.clone(), dir));
        }
        let (target, changed) = nodes::copy_vidax_node(comfy, &super::resource_dir())?;
        if changed > 0 {
            let line = format!(
                "installed custom node {} -> {}",
                nodes::VIDAX_NODE,
                target.display()
            );
            if self.print {
                println!("{line}");
            }
            self.step(
                "comfyui",
                nodes::VIDAX_NODE,
                Action::Installed,
                format!("{} ({changed} files changed)", target.display()),
            );
        } else {
            self.step(
                "comfyui",
                nodes::VIDAX_NODE,
                Action::Unchanged,
                target.display().to_string(),
            );
        }
        pack_dirs.push((nodes::VIDAX_NODE.to_string(), target));

        // The weights go into the cloned pack, so they come after it.
        for a in loaded
            .manifest
            .assets
            .iter()
            .filter(|a| assets::is_comfy(a))
        {
            self.asset(a, loaded, fetcher, state, Some(comfy))?;
        }

        let py = python::comfy_python(comfy).ok_or_else(|| {
            Error::new(
                ErrorKind::PythonDependencyFailed,
                format!(
                    "no python for ComfyUI: neither {} nor {} nor python on PATH",
                    comfy.join("venv/bin/python").display(),
                    comfy.join("venv/Scripts/python.exe").display()
                ),
            )
        })?;
        let packs: Vec<python::Pack<'_>> = pack_dirs
            .iter()
            .map(|(name, dir)| python::Pack {
                name,
                dir: dir.clone(),
            })
            .collect();
        match python::install_deps(&py, &packs, state)? {
            python::Done::Installed(calls) => self.step(
                "comfyui",
                "python dependencies",
                Action::Installed,
                format!("with {}: {}", py.display(), calls.join("; ")),
            ),
            python::Done::Unchanged => self.step(
                "comfyui",
                "python dependencies",
                Action::Unchanged,
                format!("with {} (as recorded by the last install)", py.display()),
            ),
        }
        Ok(())
    }

    /// The outcome, with the doctor's report (no live server check) when the install got
    /// through.
    pub fn finish(self, o: &Options, result: Result<()>) -> (Installed, Result<()>) {
        let changed = self.steps.iter().any(|s| s.action.changes());
        let nodes_changed = self
            .steps
            .iter()
            .any(|s| s.group == "comfyui" && s.action.changes());
        let mut hints = Vec::new();
        if nodes_changed {
            hints.push("restart ComfyUI so it loads the new or updated custom nodes".to_string());
        }
        let doctor = result.is_ok().then(|| {
            let settings = Settings::load();
            let mut d = doctor_options(false, None, &settings);
            d.comfy_server =
                Err("not checked by install (va doctor checks the running ComfyUI)".into());
            if !o.comfy_nodes {
                d.comfy_local = Err(NODES_OFF.into());
            }
            let (checks, mut more) = doctor::checks(&d);
            more.extend(hints.iter().cloned());
            Report::new("install", checks, more)
        });
        let ok = result.is_ok() && doctor.as_ref().is_some_and(|d| d.ok);
        let error = result.as_ref().err().map(|e| {
            serde_json::json!({"code": e.code(), "exit_code": e.exit_code(), "message": e.message, "hint": e.hint})
        });
        (
            Installed {
                command: "install",
                ok,
                changed,
                steps: self.steps,
                hints,
                doctor,
                error,
            },
            result,
        )
    }
}
