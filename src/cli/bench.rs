//! `va bench` (in progress).
use crate::error::Result;
use crate::record::EventLog;
use clap::Args;
#[derive(Args, Debug)]
pub struct BenchArgs {}
#[derive(Args, Debug)]
pub struct ChildArgs {}
pub fn run(_a: BenchArgs) -> Result<i32> {
    Ok(0)
}
pub fn child(_a: ChildArgs, _e: &EventLog) -> Result<i32> {
    Ok(0)
}
