//! `va install-test` and `va install` (SPEC §8); the work is done in `install::run`.

use clap::Args;

use crate::error::{Error, ErrorKind, Result};
use crate::install::{self, run::Options};

#[derive(Args, Debug)]
pub struct InstallTestArgs {
    /// Skip the ComfyUI checks (also `skip_comfyui=true` in vidax.json).
    #[arg(long, alias = "skip_comfyui")]
    pub skip_comfyui: bool,
    /// Leave the custom nodes out, as `va install --no-comfy-nodes` would.
    #[arg(long, alias = "no_comfy_nodes")]
    pub no_comfy_nodes: bool,
    /// The ComfyUI to check (default: `comfyui.url` in vidax.json, else http://127.0.0.1:8188).
    #[arg(long, alias = "comfyui_url", value_name = "URL")]
    pub comfyui_url: Option<String>,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct InstallArgs {
    /// Do not install the ComfyUI custom nodes (also VA_INSTALL_COMFY_NODES=false).
    #[arg(long, alias = "no_comfy_nodes")]
    pub no_comfy_nodes: bool,
    /// One JSON document on stdout (steps, doctor report, error) instead of the step lines.
    #[arg(long)]
    pub json: bool,
}

pub fn install_test(a: InstallTestArgs) -> Result<i32> {
    let report = install::run::install_test(&Options {
        skip_comfyui: a.skip_comfyui,
        comfy_nodes: !a.no_comfy_nodes && install::comfy_nodes_enabled_by_env(),
        comfyui_url: a.comfyui_url,
    });
    super::doctor::print(&report, a.json);
    if report.ok {
        return Ok(0);
    }
    Err(Error::new(
        ErrorKind::UnsupportedFormat,
        format!(
            "install-test: {} required part{} missing: {}",
            report.missing.len(),
            if report.missing.len() == 1 { "" } else { "s" },
            report.missing.join(", ")
        ),
    )
    .with_hint("va install does what the -> lines say"))
}

pub fn install(a: InstallArgs) -> Result<i32> {
    let o = Options {
        skip_comfyui: false,
        comfy_nodes: !a.no_comfy_nodes && install::comfy_nodes_enabled_by_env(),
        comfyui_url: None,
    };
    let mut installer = install::run::Installer::new(!a.json);
    let result = installer.run(&o);
    let (done, result) = installer.finish(&o, result);
    if a.json {
        println!(
            "{}",
            serde_json::to_string(&done)
                .unwrap_or_else(|e| format!("{{\"ok\":false,\"error\":\"{e}\"}}"))
        );
    }
    result?;
    if !a.json {
        if let Some(d) = &done.doctor {
            print!("{}", d.to_table());
        }
        println!(
            "install: {}",
            if done.changed {
                "done"
            } else {
                "nothing changed: everything was already in place"
            }
        );
    }
    Ok(if done.ok { 0 } else { super::doctor::MISSING })
}
