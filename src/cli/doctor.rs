//! `va doctor`: what this machine has (the checks live in `install::doctor`). A table on a
//! terminal, one JSON document with `--json`; exit 20 when a required part is missing.

use clap::Args;

use crate::error::Result;
use crate::install::{self, Report, Settings};

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Skip the ComfyUI checks: server, custom nodes, weights (also `skip_comfyui=true` in
    /// vidax.json).
    #[arg(long, alias = "skip_comfyui")]
    pub skip_comfyui: bool,
    /// The ComfyUI to check (default: `comfyui.url` in vidax.json, else http://127.0.0.1:8188).
    #[arg(long, alias = "comfyui_url", value_name = "URL")]
    pub comfyui_url: Option<String>,
    /// One JSON document on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Exit code when a required part is missing (the UNSUPPORTED_FORMAT code).
pub const MISSING: i32 = 20;

pub fn run(a: DoctorArgs) -> Result<i32> {
    let settings = Settings::load();
    let opts = install::run::doctor_options(a.skip_comfyui, a.comfyui_url, &settings);
    let (checks, hints) = install::doctor::checks(&opts);
    let report = Report::new("doctor", checks, hints);
    print(&report, a.json);
    Ok(if report.ok { 0 } else { MISSING })
}

/// The report as a table, or as one JSON document.
pub fn print(report: &Report, json: bool) {
    if json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_table());
    }
}
