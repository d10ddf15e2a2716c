//! `va serve`: the VIDAX HTTP API (SPEC §7, docs/VIDAX_API.md).

use std::path::PathBuf;

use clap::Args;

use crate::error::Result;

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// The server config (default: VIDAX_CONFIG, then $VA_STATE_DIR/state/config/vidax.json,
    /// then config/vidax.json).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(a: ServeArgs) -> Result<i32> {
    let config = crate::api::config::Config::resolve(a.config.as_deref())?;
    crate::api::serve(config)?;
    Ok(0)
}
