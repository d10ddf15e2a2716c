//! `va validate`, `va run` and `va produce`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use std::io::IsTerminal;

use super::report;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{self, JobDraft};
use crate::record::EventLog;
use crate::stages::{admit, run_job, Admitted, RunOptions};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The job file (docs/JOB_SCHEMA.md).
    pub job: PathBuf,
    /// One JSON document on stdout, valid or not: {"file", "valid", "problems": [{"path",
    /// "message"}], "job": the effective job or null}.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job file (docs/JOB_SCHEMA.md).
    pub job: PathBuf,
    /// Working directory of the run: a folder, created if missing (default:
    /// ./workdir/<run id>).
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Continue an unfinished run in --workdir.
    #[arg(long)]
    pub resume: bool,
    /// Skip ComfyUI (the diagnostic path): comfyui.enable=false, and lipsync.enable=false
    /// unless the job names a lipsync.provider.
    #[arg(long, alias = "no_comfyui")]
    pub no_comfyui: bool,
    /// Exit 3 when the run finished degraded.
    #[arg(long)]
    pub fail_on_degraded: bool,
    /// NDJSON on stdout: started, phase changes, progress, then done or error (docs/CLI.md).
    #[arg(long)]
    pub json: bool,
    /// Run under `va serve`: hold an exclusive lock on this file while running, and stop
    /// when stdin closes (the server went away or cancelled the run).
    #[arg(long, hide = true, value_name = "LOCK_FILE")]
    pub supervised: Option<PathBuf>,
    /// The run id to use for a new run (`va serve` passes its job id).
    #[arg(long, hide = true, value_name = "ID")]
    pub run_id: Option<String>,
}

/// The exit status of a supervised run stopped because its stdin closed (128 + SIGINT, the
/// shell's convention for an interrupted command): `INTERRUPTED`'s.
pub const EXIT_STOPPED: i32 = 130;

/// How long a supervised run may take to stop cleanly (partial removed, records written)
/// once its pipe closed, before the process ends regardless. Under the server's own grace
/// (`STOP_GRACE` in `api::jobs`), after which it kills the child.
const SUPERVISED_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Takes the supervisor's lock and starts the thread that stops the run once stdin closes:
/// it asks the run to stop ([`crate::interrupt`]), so the run records itself `interrupted`
/// and removes its partial file, and ends the process if that takes too long. The lock is
/// held until the process exits, so a restarted server knows for sure that the run is gone
/// when it can take the lock itself.
fn supervise(lock_path: &Path) -> Result<()> {
    use std::io::Read;
    let Some(lock) = crate::files::FileLock::try_exclusive(lock_path)? else {
        return Err(Error::at_path(
            ErrorKind::Usage,
            lock_path,
            "locked: another run of this job is still active",
        ));
    };
    std::thread::spawn(move || {
        let _held = lock;
        let mut buf = [0u8; 64];
        let mut stdin = std::io::stdin();
        // Nothing is ever written to the pipe: any read that does not block means it closed.
        while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
        tracing::warn!(
            stage = "run",
            "stopped: the supervising server closed the pipe (cancelled or gone)"
        );
        crate::interrupt::request(crate::interrupt::Reason::Supervisor);
        std::thread::sleep(SUPERVISED_STOP_GRACE);
        eprintln!("va run: stopped: the supervising server closed the pipe");
        std::process::exit(EXIT_STOPPED);
    });
    Ok(())
}

#[derive(Args, Debug, Default)]
pub struct ProduceArgs {
    /// The speech audio (any format FFmpeg decodes).
    #[arg(long, value_name = "FILE")]
    pub audio: PathBuf,
    /// A start image or start video (told apart by probing the file).
    #[arg(long, value_name = "FILE")]
    pub start: PathBuf,
    /// An end image, held over the silence after the speech (--post).
    #[arg(long, value_name = "FILE")]
    pub end: Option<PathBuf>,
    /// Silence before the speech, seconds (a dot for decimals: 0.5).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true, value_parser = decimal)]
    pub pre: Option<f64>,
    /// Silence after the speech, seconds (a dot for decimals: 1.5).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true, value_parser = decimal)]
    pub post: Option<f64>,
    /// Frame rate: 25, 30000/1001, 29.97 … (default 25).
    #[arg(long, value_name = "FPS", allow_hyphen_values = true)]
    pub fps: Option<String>,
    /// Output width in pixels (with --height; default: the start picture fitted into
    /// --max-width × --max-height).
    #[arg(long, value_name = "PX", allow_negative_numbers = true)]
    pub width: Option<i64>,
    /// Output height in pixels (with --width).
    #[arg(long, value_name = "PX", allow_negative_numbers = true)]
    pub height: Option<i64>,
    /// Largest output width when fitting the start picture (default 854).
    #[arg(
        long,
        alias = "max_width",
        value_name = "PX",
        allow_negative_numbers = true
    )]
    pub max_width: Option<i64>,
    /// Largest output height when fitting the start picture (default 480).
    #[arg(
        long,
        alias = "max_height",
        value_name = "PX",
        allow_negative_numbers = true
    )]
    pub max_height: Option<i64>,
    /// Lip-sync (default: on for a start image, off for a start video or with --no-comfyui).
    #[arg(long, value_parser = ["on", "off"])]
    pub lipsync: Option<String>,
    /// An external lip-sync provider's id (lipsync.providers.json).
    #[arg(long, alias = "lipsync_provider", value_name = "ID")]
    pub lipsync_provider: Option<String>,
    /// Frames per ComfyUI chunk (default: chosen from the render size).
    #[arg(
        long,
        alias = "comfyui_chunk_size",
        value_name = "FRAMES",
        allow_negative_numbers = true
    )]
    pub comfyui_chunk_size: Option<i64>,
    /// The ComfyUI server (default http://127.0.0.1:8188), e.g. a remote GPU box; several, comma-separated, share the run.
    #[arg(long, env = "COMFYUI_URL", value_name = "URL")]
    pub comfyui_url: Option<String>,
    /// Skip ComfyUI (the diagnostic path).
    #[arg(long, alias = "no_comfyui")]
    pub no_comfyui: bool,
    /// Fixed ComfyUI seed (default: a random one, recorded in the manifest).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub seed: Option<i64>,
    /// Text prompt for workflows that use {{prompt}}.
    #[arg(long, value_name = "TEXT")]
    pub prompt: Option<String>,
    /// Negative prompt for workflows that use {{negative}}.
    #[arg(long, value_name = "TEXT")]
    pub negative: Option<String>,
    /// Deliver the audio at this EBU R128 integrated loudness, LUFS (e.g. -16; true peak
    /// at most -1.5 dBTP).
    #[arg(long, value_name = "LUFS", allow_hyphen_values = true, value_parser = decimal)]
    pub loudness: Option<f64>,
    /// Working directory of the run: a folder, created if missing (default:
    /// ./workdir/<run id>); the job is written there as job.json.
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Exit 3 when the run finished degraded.
    #[arg(long)]
    pub fail_on_degraded: bool,
    /// NDJSON on stdout: started, phase changes, progress, then done or error (docs/CLI.md).
    #[arg(long)]
    pub json: bool,
}

/// A number as a user types it; a decimal comma gets "use a dot: 0.5".
fn decimal(s: &str) -> std::result::Result<f64, String> {
    let t = s.trim();
    if let Ok(v) = t.parse::<f64>() {
        if v.is_finite() {
            return Ok(v);
        }
        return Err(format!("not a finite number: {s:?}"));
    }
    let dotted = t.replace(',', ".");
    if t.contains(',') && dotted.parse::<f64>().is_ok() {
        return Err(format!("use a dot: {dotted}"));
    }
    Err(format!("not a number: {s:?}"))
}

/// The job fields `va produce` fills from its flags, with the flag (or environment variable)
/// each comes from: problems found in them name the flag the user typed.
pub const PRODUCE_FLAGS: &[(&str, &str)] = &[
    ("audio", "--audio"),
    ("start_image", "--start"),
    ("start_video", "--start"),
    ("end_image", "--end"),
    ("buffer.pre_seconds", "--pre"),
    ("buffer.post_seconds", "--post"),
    ("determinism.fps", "--fps"),
    ("determinism.seed", "--seed"),
    ("render.width", "--width"),
    ("render.height", "--height"),
    ("render.max_width", "--max-width"),
    ("render.max_height", "--max-height"),
    ("lipsync.provider", "--lipsync-provider"),
    ("lipsync.enable", "--lipsync"),
    ("comfyui.chunk_size", "--comfyui-chunk-size"),
    ("comfyui.url", "--comfyui-url (COMFYUI_URL)"),
    ("encode.loudness.target_lufs", "--loudness"),
    ("prompt", "--prompt"),
    ("negative", "--negative"),
];

/// `text` with every whole-token occurrence of `token` (not part of a longer dotted name)
/// replaced by `with`.
fn replace_token(text: &str, token: &str, with: &str) -> String {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.';
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(token) {
        let before = rest[..i].chars().next_back();
        let after = rest[i + token.len()..].chars().next();
        out.push_str(&rest[..i]);
        if before.is_some_and(ident) || after.is_some_and(|c| c != '.' && ident(c)) {
            out.push_str(token);
        } else {
            out.push_str(with);
        }
        rest = &rest[i + token.len()..];
    }
    out.push_str(rest);
    out
}

/// `problems` of the job built from flags, told in flags: `--pre: must be >= 0 (got -1)`.
fn flag_problems(problems: &[job::Problem]) -> Error {
    // Longest paths first, so `render.max_width` is not read as `render.width`'s neighbour.
    let mut table: Vec<&(&str, &str)> = PRODUCE_FLAGS.iter().collect();
    table.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    let told: Vec<String> = problems
        .iter()
        .map(|p| {
            let flag = table
                .iter()
                .find(|(path, _)| *path == p.path)
                .map_or(p.path.as_str(), |(_, f)| *f);
            let mut message = p.message.clone();
            for (path, f) in &table {
                message = replace_token(&message, path, f);
            }
            format!("{flag}: {message}")
        })
        .collect();
    Error::new(ErrorKind::ValidationFailed, told.join("; ")).with_hint("see va produce --help")
}

/// `va validate --json`'s one document.
#[derive(Debug, serde::Serialize)]
struct Validation<'a> {
    file: String,
    valid: bool,
    problems: &'a [job::Problem],
    job: Option<Value>,
}

pub fn validate(a: ValidateArgs) -> Result<i32> {
    let print = |problems: &[job::Problem], j: Option<Value>| {
        let doc = Validation {
            file: a.job.display().to_string(),
            valid: j.is_some(),
            problems,
            job: j,
        };
        println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    };
    let doc = match job::read_json(&a.job) {
        Ok(d) => d,
        Err(e) => {
            if a.json {
                let p = job::Problem {
                    path: "$".into(),
                    message: e.message.clone(),
                };
                print(&[p], None);
            }
            return Err(e);
        }
    };
    match job::from_value(doc, &job::job_folder(&a.job)) {
        Ok(j) => {
            if a.json {
                print(&[], Some(j.to_effective_json()));
            } else {
                println!("{}: valid", a.job.display());
            }
            Ok(0)
        }
        Err(problems) => {
            if a.json {
                print(&problems, None);
            } else {
                for p in &problems {
                    eprintln!("{p}");
                }
            }
            Err(job::problems_error(&a.job, &problems))
        }
    }
}

/// `./workdir/<run id>`: the default workdir is named after the run.
fn default_workdir(run_id: &str) -> PathBuf {
    PathBuf::from("workdir").join(run_id)
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// A `--workdir` must be a folder (or not exist yet).
fn check_workdir(workdir: &Path) -> Result<()> {
    if workdir.exists() && !workdir.is_dir() {
        return Err(Error::at_path(
            ErrorKind::Usage,
            workdir,
            "--workdir names a file; give a folder (it is created if missing)",
        ));
    }
    Ok(())
}

/// Runs `f`; with `--json` a failure also goes to stdout as the `error` line.
fn with_json(json: bool, f: impl FnOnce() -> Result<i32>) -> Result<i32> {
    let out = f();
    if json {
        if let Err(e) = &out {
            report::emit(&report::error_event(e));
        }
    }
    out
}

pub fn run(a: RunArgs, events: &EventLog) -> Result<i32> {
    with_json(a.json, || {
        crate::interrupt::install()?;
        if let Some(lock) = &a.supervised {
            supervise(lock)?;
        }
        let j = if a.no_comfyui {
            let mut doc = job::read_json(&a.job)?;
            without_comfyui(&mut doc);
            job::from_value(doc, &job::job_folder(&a.job))
                .map_err(|p| job::problems_error(&a.job, &p))?
        } else {
            job::load(&a.job)?
        };
        let run_id = a
            .run_id
            .clone()
            .unwrap_or_else(crate::stages::run::new_run_id);
        let workdir = absolute(
            &a.workdir
                .clone()
                .unwrap_or_else(|| default_workdir(&run_id)),
        );
        let launch = Launch {
            workdir,
            job_file: Some(absolute(&a.job)),
            resume: a.resume,
            fail_on_degraded: a.fail_on_degraded,
            run_id,
            json: a.json,
        };
        check_workdir(&launch.workdir)?;
        // An existing final is the first answer, before any input is probed.
        crate::stages::run::refuse_existing_final(
            &launch.workdir.join(&j.output.final_name),
            launch.resume,
        )?;
        let admitted = admit::admit(j, &crate::files::state_dir(), Vec::new())?;
        execute(&admitted, &launch, events)
    })
}

/// `--no-comfyui` on a job document: ComfyUI off, and lip-sync off unless an external
/// provider does it (without ComfyUI nothing else could).
fn without_comfyui(doc: &mut Value) {
    let Some(root) = doc.as_object_mut() else {
        return;
    };
    let comfy = root.entry("comfyui").or_insert_with(|| json!({}));
    if let Some(c) = comfy.as_object_mut() {
        c.insert("enable".into(), false.into());
    }
    let has_provider = root
        .get("lipsync")
        .and_then(|l| l.get("provider"))
        .is_some_and(|p| !p.is_null());
    if !has_provider {
        if let Some(l) = root.get_mut("lipsync").and_then(Value::as_object_mut) {
            l.insert("enable".into(), false.into());
        }
    }
}

/// How a run is launched from the command line.
struct Launch {
    workdir: PathBuf,
    job_file: Option<PathBuf>,
    resume: bool,
    fail_on_degraded: bool,
    run_id: String,
    json: bool,
}

/// Runs an admitted job (the workdir checked, the job admitted: see [`run`] and [`produce`]).
fn execute(admitted: &Admitted, l: &Launch, events: &EventLog) -> Result<i32> {
    let started = std::time::Instant::now();
    let workdir = &l.workdir;
    // The run checks its inputs before it touches the workdir, and points the event log at
    // it once it holds the workdir's lock.
    let mut reporters: Vec<Box<dyn crate::progress::Progress>> = Vec::new();
    if let Some(t) = report::TerminalProgress::for_stderr() {
        reporters.push(Box::new(t));
    }
    if l.json {
        reporters.push(Box::new(report::JsonProgress::default()));
    }
    let opts = RunOptions {
        workdir: workdir.clone(),
        resume: l.resume,
        state_dir: crate::files::state_dir(),
        job_file: l.job_file.clone(),
        progress: crate::progress::Reporter::new(report::Both(reporters)),
        run_id: Some(l.run_id.clone()),
        events: Some(events.clone()),
    };
    let outcome = run_job(admitted, &opts)?;
    let code = if outcome.degraded && l.fail_on_degraded {
        3
    } else {
        0
    };
    let summary = report::Summary::of(&outcome, started.elapsed(), code);
    if l.json {
        report::emit(&report::JsonEvent::Done(summary.clone()));
    }
    if std::io::stderr().is_terminal() {
        eprintln!("{}", summary.line());
    } else if !l.json {
        println!("{}", summary.line());
    }
    if !l.json {
        println!("{}", outcome.final_path.display());
    }
    if outcome.degraded {
        eprintln!("warning: run {} finished degraded", outcome.run_id);
    }
    Ok(code)
}

pub fn produce(a: ProduceArgs, events: &EventLog) -> Result<i32> {
    with_json(a.json, || produce_inner(&a, events))
}

fn produce_inner(a: &ProduceArgs, events: &EventLog) -> Result<i32> {
    crate::interrupt::install()?;
    if let Some(w) = &a.workdir {
        check_workdir(w)?;
    }
    let draft = a.draft()?;
    let run_id = crate::stages::run::new_run_id();
    let workdir = absolute(
        &a.workdir
            .clone()
            .unwrap_or_else(|| default_workdir(&run_id)),
    );
    check_workdir(&workdir)?;
    crate::stages::run::refuse_existing_final(
        &workdir.join(job::draft::PRODUCE_FINAL_NAME),
        false,
    )?;
    let cwd = std::env::current_dir().unwrap_or_default();
    let admitted = admit::admit_draft(&draft, &cwd, &crate::files::state_dir(), flag_problems)?;
    // The run writes the job (effective, paths without loss) to `<workdir>/job.json` once it
    // holds the workdir; that file is the job of its registry entry and of `--resume`.
    execute(
        &admitted,
        &Launch {
            workdir,
            job_file: None,
            resume: false,
            fail_on_degraded: a.fail_on_degraded,
            run_id,
            json: a.json,
        },
        events,
    )
}

impl ProduceArgs {
    /// The job draft these flags say (the same draft `POST /produce` builds from its body).
    pub fn draft(&self) -> Result<JobDraft> {
        Ok(JobDraft {
            audio: self.audio.clone(),
            start: self.start.clone(),
            end: self.end.clone(),
            pre: self.pre,
            post: self.post,
            fps: self.fps.clone(),
            width: self.width,
            height: self.height,
            max_width: self.max_width,
            max_height: self.max_height,
            lipsync: self
                .lipsync
                .as_deref()
                .map(job::draft::on_off)
                .transpose()?,
            lipsync_provider: self.lipsync_provider.clone(),
            comfyui_chunk_size: self.comfyui_chunk_size,
            comfyui_url: self.comfyui_url.clone(),
            no_comfyui: self.no_comfyui,
            seed: self.seed,
            prompt: self.prompt.clone(),
            negative: self.negative.clone(),
            loudness: self.loudness,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_comma_gets_use_a_dot() {
        assert_eq!(decimal("0.5"), Ok(0.5));
        assert_eq!(decimal("-1"), Ok(-1.0));
        assert_eq!(decimal("0,5").unwrap_err(), "use a dot: 0.5");
        assert!(decimal("abc").unwrap_err().contains("not a number"));
        assert!(decimal("inf").is_err());
    }

    #[test]
    fn problems_from_flags_name_the_flags() {
        let p = |path: &str, message: &str| job::Problem {
            path: path.into(),
            message: message.into(),
        };
        let e = flag_problems(&[
            p("render.height", "must be given together with render.width"),
            p("buffer.pre_seconds", "must be >= 0 (got -1)"),
            p("determinism.fps", "not a frame rate: x"),
        ]);
        assert_eq!(e.kind, ErrorKind::ValidationFailed);
        assert_eq!(
            e.message,
            "--height: must be given together with --width; --pre: must be >= 0 (got -1); \
             --fps: not a frame rate: x"
        );
        assert_eq!(
            replace_token(
                "render.max_width and render.width",
                "render.width",
                "--width"
            ),
            "render.max_width and --width"
        );
    }
}
