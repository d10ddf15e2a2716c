//! `va validate`, `va run` and `va produce`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Map, Value};

use crate::error::{Error, ErrorKind, Result};
use crate::files::path_json;
use crate::job;
use crate::media;
use crate::record::EventLog;
use crate::stages::{run_job, RunOptions};

#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// The job file.
    pub job: PathBuf,
    /// Print the problems (or the effective job) as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The job file.
    pub job: PathBuf,
    /// Working directory of the run (default: ./workdir/run-<timestamp>).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Continue an unfinished run in --workdir.
    #[arg(long)]
    pub resume: bool,
    /// Exit 3 when the run finished degraded.
    #[arg(long)]
    pub fail_on_degraded: bool,
    /// Run under `va serve`: hold an exclusive lock on this file while running, and stop
    /// when stdin closes (the server went away or cancelled the run).
    #[arg(long, hide = true, value_name = "LOCK_FILE")]
    pub supervised: Option<PathBuf>,
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
    #[arg(long)]
    pub audio: PathBuf,
    /// A start image or start video (told apart by probing the file).
    #[arg(long)]
    pub start: PathBuf,
    #[arg(long)]
    pub end: Option<PathBuf>,
    /// Silence before the speech, seconds.
    #[arg(long)]
    pub pre: Option<f64>,
    /// Silence after the speech, seconds.
    #[arg(long)]
    pub post: Option<f64>,
    /// Frame rate: 25, 30000/1001, 29.97 …
    #[arg(long)]
    pub fps: Option<String>,
    #[arg(long)]
    pub width: Option<u32>,
    #[arg(long)]
    pub height: Option<u32>,
    #[arg(long, alias = "max_width")]
    pub max_width: Option<u32>,
    #[arg(long, alias = "max_height")]
    pub max_height: Option<u32>,
    /// on | off (default: on for a start image, off for a start video).
    #[arg(long)]
    pub lipsync: Option<String>,
    #[arg(long, alias = "lipsync_provider")]
    pub lipsync_provider: Option<String>,
    #[arg(long, alias = "comfyui_chunk_size")]
    pub comfyui_chunk_size: Option<u32>,
    /// Skip ComfyUI (the diagnostic path).
    #[arg(long, alias = "no_comfyui")]
    pub no_comfyui: bool,
    #[arg(long)]
    pub seed: Option<u64>,
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long)]
    pub negative: Option<String>,
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    #[arg(long)]
    pub fail_on_degraded: bool,
}

pub fn validate(a: ValidateArgs) -> Result<i32> {
    let doc = job::read_json(&a.job)?;
    let j = match job::from_value(doc, &job::job_folder(&a.job)) {
        Ok(j) => j,
        Err(problems) => {
            if a.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&problems).unwrap_or_default()
                );
            } else {
                for p in &problems {
                    eprintln!("{p}");
                }
            }
            return Err(job::problems_error(&a.job, &problems));
        }
    };
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&j.to_effective_json()).unwrap_or_default()
        );
    } else {
        println!("{}: valid", a.job.display());
    }
    Ok(0)
}

fn default_workdir() -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]-[hour][minute][second]"
        ))
        .unwrap_or_default();
    PathBuf::from("workdir").join(format!("run-{stamp}-{}", std::process::id()))
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

pub fn run(a: RunArgs, events: &EventLog) -> Result<i32> {
    crate::interrupt::install()?;
    if let Some(lock) = &a.supervised {
        supervise(lock)?;
    }
    let j = job::load(&a.job)?;
    let workdir = absolute(&a.workdir.unwrap_or_else(default_workdir));
    execute(
        &j,
        workdir,
        Some(absolute(&a.job)),
        a.resume,
        a.fail_on_degraded,
        events,
    )
}

fn execute(
    j: &job::Job,
    workdir: PathBuf,
    job_file: Option<PathBuf>,
    resume: bool,
    fail_on_degraded: bool,
    events: &EventLog,
) -> Result<i32> {
    // The run checks its inputs before it touches the workdir, and points the event log at
    // it once it holds the workdir's lock.
    let opts = RunOptions {
        workdir,
        resume,
        state_dir: crate::files::state_dir(),
        job_file,
        progress: true,
        events: Some(events.clone()),
    };
    let outcome = run_job(j, &opts)?;
    println!("{}", outcome.final_path.display());
    if outcome.degraded {
        eprintln!("warning: run {} finished degraded", outcome.run_id);
        if fail_on_degraded {
            return Ok(3);
        }
    }
    Ok(0)
}

pub fn produce(a: ProduceArgs, events: &EventLog) -> Result<i32> {
    crate::interrupt::install()?;
    let doc = produce_job(&a)?;
    let workdir = absolute(a.workdir.as_deref().unwrap_or(&default_workdir()));
    let cwd = std::env::current_dir().unwrap_or_default();
    let j = job::from_value(Value::Object(doc), &cwd)
        .map_err(|p| job::problems_error(Path::new("produce flags"), &p))?;
    // The run writes the job (effective, paths without loss) to `<workdir>/job.json` once it
    // holds the workdir; that file is the job of its registry entry and of `--resume`.
    execute(&j, workdir, None, false, a.fail_on_degraded, events)
}

/// The job document `va produce` builds from its options (also behind `POST /produce` of
/// the API): the start kind comes from probing the file, paths are made absolute against the
/// current directory, the final is `fertig.mp4`. Not yet validated.
pub fn produce_job(a: &ProduceArgs) -> Result<Map<String, Value>> {
    let probe = media::probe::probe_start(&a.start)?;
    let is_image = probe.kind == media::probe::StartKind::Image;
    let lipsync = match a.lipsync.as_deref() {
        None => is_image && !a.no_comfyui,
        Some("on") => true,
        Some("off") => false,
        Some(other) => {
            return Err(Error::new(
                ErrorKind::Usage,
                format!("--lipsync: expected on or off, got {other:?}"),
            ));
        }
    };
    let path = |p: &Path| path_json::to_value(&absolute(p));
    let mut doc = Map::new();
    doc.insert("audio".into(), path(&a.audio));
    doc.insert(
        if is_image {
            "start_image"
        } else {
            "start_video"
        }
        .into(),
        path(&a.start),
    );
    if let Some(e) = &a.end {
        doc.insert("end_image".into(), path(e));
    }
    doc.insert(
        "buffer".into(),
        json!({"pre_seconds": a.pre.unwrap_or(0.0), "post_seconds": a.post.unwrap_or(0.0)}),
    );
    let mut det = Map::new();
    if let Some(f) = &a.fps {
        det.insert("fps".into(), Value::from(f.clone()));
    }
    match a.seed {
        Some(s) => {
            det.insert("seed".into(), s.into());
            det.insert("seed_policy".into(), "fixed".into());
        }
        None => {
            det.insert("seed_policy".into(), "random".into());
        }
    }
    doc.insert("determinism".into(), Value::Object(det));
    let mut render = Map::new();
    for (k, v) in [
        ("width", a.width),
        ("height", a.height),
        ("max_width", a.max_width),
        ("max_height", a.max_height),
    ] {
        if let Some(v) = v {
            render.insert(k.into(), v.into());
        }
    }
    doc.insert("render".into(), Value::Object(render));
    let mut comfy = Map::new();
    comfy.insert("enable".into(), (!a.no_comfyui).into());
    // The server to use (default http://127.0.0.1:8188), e.g. a remote GPU box.
    if let Ok(url) = std::env::var("COMFYUI_URL") {
        comfy.insert("url".into(), url.into());
    }
    if let Some(c) = a.comfyui_chunk_size {
        comfy.insert("chunk_size".into(), c.into());
    }
    doc.insert("comfyui".into(), Value::Object(comfy));
    doc.insert(
        "lipsync".into(),
        json!({"enable": lipsync, "provider": a.lipsync_provider}),
    );
    if let Some(p) = &a.prompt {
        doc.insert("prompt".into(), p.clone().into());
    }
    if let Some(n) = &a.negative {
        doc.insert("negative".into(), n.clone().into());
    }
    doc.insert("output".into(), json!({"final_name": "fertig.mp4"}));
    Ok(doc)
}
