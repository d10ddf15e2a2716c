//! The `va` command line: flags parsed once into each command's options, errors printed as
//! one line with their code, and the exit code chosen here.

pub(crate) mod bench;
mod doctor;
mod inspect;
mod install;
pub mod report;
pub(crate) mod run;
mod serve;
mod verify;

use clap::{Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::error::Error;
use crate::record::EventLog;

/// The environment variables `va` reads, with what each does (shown under `va --help`;
/// a test checks the list against the code).
pub const ENVIRONMENT: &[(&str, &str)] = &[
    (
        "VA_STATE_DIR",
        "base of the state dir $VA_STATE_DIR/state (runs.json, configs, assets); default ~/.va",
    ),
    (
        "VA_LOG",
        "what stderr shows, as a tracing filter (e.g. info, debug); default: warnings",
    ),
    (
        "COMFYUI_URL",
        "the ComfyUI server for va produce (--comfyui-url) and POST /produce",
    ),
    (
        "COMFYUI_DIR",
        "the ComfyUI folder (install, doctor; input folder for staged files)",
    ),
    (
        "COMFYUI_INPUT_DIR",
        "ComfyUI's input folder, when it is not COMFYUI_DIR/input",
    ),
    (
        "VIDAX_CONFIG",
        "the vidax.json of va serve, doctor and install (else the state dir's)",
    ),
    (
        "VIDAX_API_KEY",
        "the API key va serve requires (instead of vidax.json's api_key)",
    ),
    (
        "VIDAX_ASSETS_CONFIG",
        "the assets list va install fetches (instead of the state dir's)",
    ),
    (
        "VA_RESOURCE_DIR",
        "where va finds its config/ and comfy_nodes/ (default: beside the binary)",
    ),
    (
        "VA_INSTALL_COMFY_NODES",
        "false: va install leaves the custom nodes alone (--no-comfy-nodes)",
    ),
];

/// `ENVIRONMENT` as the help's closing section.
fn environment_help() -> String {
    let mut s = String::from("Environment:\n");
    for (name, what) in ENVIRONMENT {
        s.push_str(&format!("  {name:<23} {what}\n"));
    }
    s.push_str("\nExit codes and error codes: docs/ERRORS.md; every command: docs/CLI.md.");
    s
}

#[derive(Parser, Debug)]
#[command(
    name = "va",
    version,
    about = "vidax: frame-exact talking-head videos from speech audio and a start image",
    after_help = environment_help()
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check FFmpeg, the state dir, Python, ComfyUI, its custom nodes and weights.
    Doctor(doctor::DoctorArgs),
    /// Doctor plus the config and asset checks; downloads nothing, lists what install would do.
    InstallTest(install::InstallTestArgs),
    /// Create the state dir, copy the example configs, fetch assets, install the custom nodes.
    Install(install::InstallArgs),
    /// Validate a job file and print every problem with its JSON path.
    Validate(run::ValidateArgs),
    /// Run a job file.
    Run(run::RunArgs),
    /// Build a job from flags, write it to the workdir, validate and run it.
    Produce(run::ProduceArgs),
    /// Show one run's manifest summary, or the recent runs.
    Status(inspect::StatusArgs),
    /// Print a run's logs/events.jsonl.
    Logs(inspect::LogsArgs),
    /// Decode an MP4 and check frames, CFR, audio samples and the A/V delta.
    Verify(verify::VerifyArgs),
    /// Encode-throughput benchmark: the full job against the encode floor.
    Bench(bench::BenchArgs),
    /// The VIDAX HTTP API.
    Serve(serve::ServeArgs),
    /// Shell completions for bash, zsh, fish or powershell on stdout.
    Completions(CompletionsArgs),
    /// The man page (roff) on stdout: `va man > va.1`.
    Man,
    #[command(hide = true, name = "__bench-child")]
    BenchChild(bench::ChildArgs),
}

/// Runs the command line and returns the process exit code.
pub fn main() -> i32 {
    crate::media::restore_default_sigpipe();
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() {
                crate::ErrorKind::Usage.exit_code()
            } else {
                0
            };
            let _ = e.print();
            return code;
        }
    };
    let events = EventLog::new();
    init_tracing(&events);
    let result = match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::InstallTest(a) => install::install_test(a),
        Command::Install(a) => install::install(a),
        Command::Validate(a) => run::validate(a),
        Command::Run(a) => run::run(a, &events),
        Command::Produce(a) => run::produce(a, &events),
        Command::Status(a) => inspect::status(a),
        Command::Logs(a) => inspect::logs(a),
        Command::Verify(a) => verify::run(a),
        Command::Bench(a) => bench::run(a),
        Command::BenchChild(a) => bench::child(a, &events),
        Command::Serve(a) => serve::run(a),
        Command::Completions(a) => completions(a),
        Command::Man => man(),
    };
    match result {
        Ok(code) => code,
        Err(e) => report(&e),
    }
}

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// The clap command tree of `va` (completions, man page, help tests).
pub fn command() -> clap::Command {
    <Cli as clap::CommandFactory>::command()
}

fn completions(a: CompletionsArgs) -> crate::error::Result<i32> {
    let mut cmd = command();
    clap_complete::generate(a.shell, &mut cmd, "va", &mut std::io::stdout());
    Ok(0)
}

fn man() -> crate::error::Result<i32> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command())
        .render(&mut out)
        .map_err(|e| Error::new(crate::ErrorKind::Internal, format!("man page: {e}")))?;
    use std::io::Write;
    let _ = std::io::stdout().write_all(&out);
    Ok(0)
}

fn report(e: &Error) -> i32 {
    eprintln!("error: {e}");
    e.exit_code()
}

/// Events go to the current run's logs/events.jsonl (once a workdir is set) and warnings to
/// stderr (`VA_LOG` sets the stderr filter, e.g. `VA_LOG=info` or `VA_LOG=debug`).
fn init_tracing(events: &EventLog) {
    // By default stderr shows vidax's own warnings only: FFmpeg's chatter stays in
    // events.jsonl, and errors are printed once, as the final `error:` line.
    let filter = tracing_subscriber::EnvFilter::try_from_env("VA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,vidax::media::ffi=off"));
    let not_errors = tracing_subscriber::filter::filter_fn(|m| *m.level() != tracing::Level::ERROR);
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_filter(not_errors)
        .with_filter(filter);
    let _ = tracing_subscriber::registry()
        .with(
            events
                .layer()
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        )
        .with(stderr)
        .try_init();
}
