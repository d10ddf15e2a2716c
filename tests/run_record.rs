//! The run as a locked, durable record (issue 12), with real processes, real signals and real
//! locks: one run per workdir, no run takes over another's workdir, every run that got an id
//! stays on record (completed, failed with its code, interrupted), a stop by SIGINT/SIGTERM
//! is recorded and resumable, a run killed outright shows as interrupted from its free lock,
//! and a workdir whose name is not UTF-8 works end to end.

#[path = "common/comfy_server.rs"]
mod comfy_server;
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// A job without ComfyUI: `seconds` of 16 kHz speech, a 160×120 start image.
fn job(sb: &Sandbox, name: &str, seconds: u64, extra: Value) -> PathBuf {
    let audio = sb.join(&format!("{name}.wav"));
    write_wav(&audio, 16_000, 1, 16_000 * seconds);
    let start = sb.join("face.png");
    if !start.exists() {
        write_face_png(&start, 160, 120);
    }
    let mut j = json!({
        "audio": audio, "start_image": start,
        "determinism": { "fps": 25, "seed": 5 },
        "render": { "max_width": 160, "max_height": 120 },
        "comfyui": { "enable": false },
    });
    for (k, v) in extra.as_object().unwrap() {
        j[k] = v.clone();
    }
    sb.write_job(&format!("{name}.json"), &j)
}

/// `va run JOB --workdir WD [extra]` started in the background.
fn spawn(sb: &Sandbox, job: &Path, wd: &Path, extra: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("va"))
        .env("VA_STATE_DIR", sb.state_root())
        .env_remove("VA_LOG")
        .env_remove("COMFYUI_DIR")
        .env_remove("COMFYUI_INPUT_DIR")
        .current_dir(sb.path())
        .arg("run")
        .arg(job)
        .arg("--workdir")
        .arg(wd)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn va")
}

/// Waits for `child` (bounded: a stop must be prompt) and returns its output.
fn finish(child: Child, within: Duration) -> Output {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(within) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("va (pid {pid}) did not end within {within:?}");
        }
    }
}

/// Sends `sig` (`INT`, `TERM`, `KILL`) to `child` with kill(1).
fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(ok.success(), "kill -{sig}");
}

/// The manifest once `phase` is `running` (polled every millisecond; a manifest is replaced
/// atomically, so every read sees a whole one).
fn wait_phase(wd: &Path, phase: &str) -> Value {
    let t0 = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(wd.join("manifest.json")) {
            let m: Value = serde_json::from_str(&text).unwrap();
            if m["phases"][phase]["status"] == "running" {
                return m;
            }
            assert!(
                !["completed", "failed", "interrupted"]
                    .contains(&m["run_status"].as_str().unwrap_or("")),
                "the run ended before {phase} was seen running: {m}"
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{phase} never ran in {}",
            wd.display()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The registry's entries by run id.
fn registry(sb: &Sandbox) -> BTreeMap<String, Value> {
    let reg = read_json(&sb.runs_json());
    reg["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), r.clone()))
        .collect()
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// `va verify FINAL` against the manifest's frame count and padded duration.
fn assert_verifies(sb: &Sandbox, final_path: &Path, m: &Value) {
    let out = sb
        .va()
        .arg("verify")
        .arg(final_path)
        .arg("--expect-frames")
        .arg(m["target_frames"].to_string())
        .arg("--expect-audio")
        .arg(m["audio_duration_seconds"].to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "va verify {}: {}{}",
        final_path.display(),
        stdout_of(&out),
        stderr_of(&out)
    );
}

/// The one `error:` line of a `va` that failed.
fn error_line(out: &Output) -> String {
    let err = stderr_of(out);
    assert!(!err.contains("panicked"), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    lines[0].to_string()
}

#[test]
fn two_runs_into_one_workdir_at_once_one_runs_the_other_is_busy_20_times() {
    let sb = Sandbox::new();
    // 8 s of audio: the run holds its workdir for a good while, so the two always overlap.
    let job = job(&sb, "job", 8, json!({}));
    for rep in 0..20 {
        let wd = sb.join(&format!("wd{rep}"));
        let a = spawn(&sb, &job, &wd, &[]);
        let b = spawn(&sb, &job, &wd, &[]);
        let outs = [
            finish(a, Duration::from_secs(120)),
            finish(b, Duration::from_secs(120)),
        ];
        let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
        let (won, lost) = match codes.as_slice() {
            [Some(0), Some(14)] => (&outs[0], &outs[1]),
            [Some(14), Some(0)] => (&outs[1], &outs[0]),
            _ => panic!(
                "rep {rep}: exits {codes:?}, want one 0 and one 14:\n{}\n{}",
                stderr_of(&outs[0]),
                stderr_of(&outs[1])
            ),
        };
        let m = read_json(&wd.join("manifest.json"));
        let line = error_line(lost);
        assert!(line.contains("WORKDIR_BUSY"), "rep {rep}: {line}");
        assert!(
            line.contains(m["run_id"].as_str().unwrap()),
            "rep {rep}: the line names the holder {}: {line}",
            m["run_id"]
        );
        assert_eq!(stdout_of(lost), "", "rep {rep}");
        // stdout: the summary line, then the final's path as the last line (docs/CLI.md).
        let final_path = PathBuf::from(stdout_of(won).trim().lines().last().unwrap_or(""));
        assert_eq!(final_path, wd.join("final.mp4"));
        assert_verifies(&sb, &final_path, &m);
    }
    // One entry per workdir: the refused runs never got an id.
    let reg = registry(&sb);
    assert_eq!(reg.len(), 20, "{reg:?}");
    assert!(reg.values().all(|r| r["status"] == "completed"));
}

#[test]
fn a_second_run_into_a_used_workdir_is_refused_and_the_first_runs_files_stay_the_same() {
    let sb = Sandbox::new();
    let first = job(&sb, "first", 1, json!({}));
    let wd = sb.join("wd");
    let (_, m) = sb.run_ok(&first, &wd);
    let run_id = m["run_id"].as_str().unwrap().to_string();
    let before = snapshot(&wd);
    let runs_before = std::fs::read(sb.runs_json()).unwrap();

    // Another job, another final name: nothing of the first run may change.
    let second = job(
        &sb,
        "second",
        1,
        json!({"output": {"final_name": "other.mp4"}}),
    );
    let out = finish(spawn(&sb, &second, &wd, &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(12), "{}", stderr_of(&out));
    let line = error_line(&out);
    assert!(
        line.contains("OUTPUT_EXISTS") && line.contains(&run_id),
        "{line}"
    );
    assert!(
        line.contains("--resume"),
        "names the resume command: {line}"
    );
    // `va produce` into it too.
    let out = sb
        .va()
        .args(["produce", "--no-comfyui", "--audio"])
        .arg(sb.join("second.wav"))
        .arg("--start")
        .arg(sb.join("face.png"))
        .arg("--workdir")
        .arg(&wd)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", stderr_of(&out));
    assert!(error_line(&out).contains(&run_id));
    assert_eq!(snapshot(&wd), before, "the first run's files changed");
    assert_eq!(std::fs::read(sb.runs_json()).unwrap(), runs_before);

    // A failed run's workdir is not taken over either: it is named with its resume command.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let comfy = job(
        &sb,
        "comfy",
        1,
        json!({"comfyui": {"enable": true, "url": format!("http://127.0.0.1:{port}")}}),
    );
    let wd2 = sb.join("wd2");
    let out = finish(spawn(&sb, &comfy, &wd2, &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(30), "{}", stderr_of(&out));
    let failed_id = read_json(&wd2.join("manifest.json"))["run_id"]
        .as_str()
        .unwrap()
        .to_string();
    let before = snapshot(&wd2);
    let out = finish(spawn(&sb, &first, &wd2, &[]), Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(12), "{}", stderr_of(&out));
    let line = error_line(&out);
    assert!(
        line.contains(&failed_id) && line.contains("(failed)") && line.contains("--resume"),
        "{line}"
    );
    assert_eq!(snapshot(&wd2), before);
    // The failed run is listed with its code, in the registry and by `va status`.
    let reg = registry(&sb);
    assert_eq!(reg[&failed_id]["status"], "failed");
    assert_eq!(reg[&failed_id]["exit_status"], 30);
    assert_eq!(reg[&failed_id]["error"]["code"], "COMFYUI_UNAVAILABLE");
    let listed = sb.va().arg("status").output().unwrap();
    let text = stdout_of(&listed);
    let row = text
        .lines()
        .find(|l| l.starts_with(&failed_id))
        .unwrap_or_else(|| panic!("{failed_id} not listed:\n{text}"));
    assert!(
        row.contains("failed") && row.contains("COMFYUI_UNAVAILABLE"),
        "{row}"
    );
    // And it continues with --resume (here without ComfyUI) to a final that verifies.
    let local = job(&sb, "comfy", 1, json!({}));
    let out = finish(
        spawn(&sb, &local, &wd2, &["--resume"]),
        Duration::from_secs(120),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = read_json(&wd2.join("manifest.json"));
    assert_eq!(m["run_id"], json!(failed_id));
    assert_verifies(&sb, &wd2.join("final.mp4"), &m);
    assert_eq!(registry(&sb)[&failed_id]["status"], "completed");
}

/// After a stop: exit code, the one line naming the run and its `--resume` command, the
/// manifest and registry `interrupted`, no partial and no final; then `--resume` completes.
/// How a stop is expected to be recorded.
struct Stopped {
    exit: i32,
    code: &'static str,
    /// The phase that was running.
    phase: &'static str,
}

fn check_stopped_and_resume(
    sb: &Sandbox,
    (job, resume_job): (&Path, &Path),
    wd: &Path,
    out: &Output,
    Stopped { exit, code, phase }: Stopped,
) {
    assert_eq!(out.status.code(), Some(exit), "{}", stderr_of(out));
    let line = error_line(out);
    let m = read_json(&wd.join("manifest.json"));
    let run_id = m["run_id"].as_str().unwrap().to_string();
    assert!(line.contains(code) && line.contains(&run_id), "{line}");
    assert!(
        line.contains(&format!(
            "va run {} --workdir {} --resume",
            job.display(),
            wd.display()
        )),
        "names the resume command: {line}"
    );
    assert_eq!(m["run_status"], "interrupted", "{m}");
    assert_eq!(m["exit_status"], exit);
    assert_eq!(m["error"]["code"], code);
    assert_eq!(m["phases"][phase]["status"], "interrupted", "{m}");
    let reg = registry(sb);
    assert_eq!(reg[&run_id]["status"], "interrupted");
    assert_eq!(reg[&run_id]["exit_status"], exit);
    assert!(!wd.join(".final.mp4.partial").exists(), "partial left");
    assert!(!wd.join("final.mp4").exists());

    let out = finish(
        spawn(sb, resume_job, wd, &["--resume"]),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "resume: {}", stderr_of(&out));
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(m["run_id"], json!(run_id), "resume keeps the run");
    assert_eq!(m["run_status"], "completed");
    assert_verifies(sb, &wd.join("final.mp4"), &m);
    assert_eq!(registry(sb)[&run_id]["status"], "completed");
}

#[test]
fn sigint_and_sigterm_during_the_encode_stop_it_at_once_and_resume() {
    let sb = Sandbox::new();
    // 40 s of audio: 1000 frames, long enough to be caught mid-encode.
    let long = job(&sb, "long", 40, json!({}));
    for (sig, exit, code) in [("INT", 130, "INTERRUPTED"), ("TERM", 143, "TERMINATED")] {
        let wd = sb.join(&format!("wd-{sig}"));
        let child = spawn(&sb, &long, &wd, &[]);
        wait_phase(&wd, "encode");
        std::thread::sleep(Duration::from_millis(200));
        signal(&child, sig);
        let t0 = Instant::now();
        let out = finish(child, Duration::from_secs(30));
        let took = t0.elapsed();
        let how = Stopped {
            exit,
            code,
            phase: "encode",
        };
        check_stopped_and_resume(&sb, (&long, &long), &wd, &out, how);
        eprintln!("SIG{sig} during encode: ended {took:?} after the signal");
    }
}

#[test]
fn sigint_during_prepare_stops_before_the_encode_and_resumes() {
    let sb = Sandbox::new();
    // A minute of 48 kHz stereo: prepare (decode, pad, write) takes a noticeable moment.
    let audio = sb.join("stereo.wav");
    write_wav(&audio, 48_000, 2, 48_000 * 60);
    let j = job(
        &sb,
        "prep",
        1,
        json!({"audio": audio, "determinism": {"fps": 5, "seed": 5}}),
    );
    let wd = sb.join("wd");
    let child = spawn(&sb, &j, &wd, &[]);
    wait_phase(&wd, "prepare");
    signal(&child, "INT");
    let out = finish(child, Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));
    let m = read_json(&wd.join("manifest.json"));
    // Noticed at the phase boundary: prepare finished its work, nothing after it started.
    assert_eq!(m["phases"]["encode"]["status"], "pending", "{m}");
    assert!(
        ["completed", "interrupted"].contains(&m["phases"]["prepare"]["status"].as_str().unwrap()),
        "{m}"
    );
    assert_eq!(m["run_status"], "interrupted");
    let run_id = m["run_id"].as_str().unwrap();
    assert_eq!(registry(&sb)[run_id]["status"], "interrupted");
    let out = finish(spawn(&sb, &j, &wd, &["--resume"]), Duration::from_secs(300));
    assert!(out.status.success(), "resume: {}", stderr_of(&out));
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(m["run_status"], "completed");
    assert_verifies(&sb, &wd.join("final.mp4"), &m);
}

#[test]
fn sigint_and_sigterm_while_comfyui_holds_the_prompt_stop_the_wait_and_resume() {
    use comfy_server::{Config, Server};
    let sb = Sandbox::new();
    // A server that holds the lip-sync prompt for ten minutes (the face check before it
    // finishes at once), and one that answers at once.
    let held = Server::start(Config {
        run_ms: 600_000,
        hold_class: Some("VIDAX_Wav2Lip".into()),
        ..Config::default()
    });
    let quick = Server::start(Config::default());
    let comfy = |name: &str, url: &str| {
        job(
            &sb,
            name,
            1,
            json!({
                "comfyui": {"enable": true, "url": url, "poll_interval_ms": 50,
                    "workflow_ids": ["vidax_wav2lip_image_audio"]},
                "lipsync": {"enable": true},
            }),
        )
    };
    for (sig, exit, code) in [("INT", 130, "INTERRUPTED"), ("TERM", 143, "TERMINATED")] {
        let slow = comfy(&format!("held-{sig}"), &held.url);
        let fast = comfy(&format!("quick-{sig}"), &quick.url);
        let wd = sb.join(&format!("wd-{sig}"));
        let posts = held.posts();
        let child = spawn(&sb, &slow, &wd, &[]);
        wait_phase(&wd, "comfyui");
        let t0 = Instant::now();
        // The face check's prompt, then the held lip-sync's.
        while held.posts() < posts + 2 {
            assert!(t0.elapsed() < Duration::from_secs(60), "no prompt posted");
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(200));
        signal(&child, sig);
        let t0 = Instant::now();
        let out = finish(child, Duration::from_secs(10));
        let took = t0.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "the wait noticed late: {took:?}"
        );
        // The held prompt is withdrawn from ComfyUI (taken off the queue and interrupted), not
        // left running for a run that is gone, and the manifest says so.
        let m: Value =
            serde_json::from_slice(&std::fs::read(wd.join("manifest.json")).unwrap()).unwrap();
        let withdrawn: Vec<String> = m["comfyui"]["attempts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| {
                a["result"]
                    .as_str()
                    .unwrap()
                    .starts_with("withdrawn from ComfyUI")
            })
            .map(|a| a["prompt_id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(withdrawn.len(), 1, "{}", m["comfyui"]["attempts"]);
        assert!(held.state.deleted.lock().unwrap().contains(&withdrawn[0]));
        assert!(held
            .state
            .interrupted
            .lock()
            .unwrap()
            .contains(&withdrawn[0]));
        let how = Stopped {
            exit,
            code,
            phase: "comfyui",
        };
        check_stopped_and_resume(&sb, (&slow, &fast), &wd, &out, how);
        eprintln!("SIG{sig} in the ComfyUI wait: ended {took:?} after the signal");
    }
}

#[test]
fn a_run_killed_outright_shows_as_interrupted_once_its_lock_is_free_and_resumes() {
    let sb = Sandbox::new();
    let long = job(&sb, "long", 40, json!({}));
    let wd = sb.join("wd");
    let child = spawn(&sb, &long, &wd, &[]);
    let m = wait_phase(&wd, "encode");
    let run_id = m["run_id"].as_str().unwrap().to_string();
    // While it runs, it is running.
    let status = sb.va().arg("status").arg(&run_id).output().unwrap();
    assert!(
        stdout_of(&status).contains("status     running"),
        "{}",
        stdout_of(&status)
    );
    signal(&child, "KILL");
    let out = finish(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), None, "killed by a signal");
    assert_eq!(
        registry(&sb)[&run_id]["status"],
        "running",
        "nothing could record it"
    );

    // `va status` (by id, by workdir, and the list) sees the free lock.
    for arg in [run_id.as_str(), wd.to_str().unwrap()] {
        let out = sb.va().arg("status").arg(arg).output().unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
        assert!(
            stdout_of(&out).contains("status     interrupted"),
            "va status {arg}: {}",
            stdout_of(&out)
        );
    }
    let out = sb.va().args(["status", "--json"]).output().unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == json!(run_id))
        .unwrap();
    assert_eq!(entry["status"], "interrupted", "{entry}");
    // ... and recorded it: manifest and registry, the partial gone.
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(m["run_status"], "interrupted");
    assert_eq!(m["phases"]["encode"]["status"], "interrupted");
    assert_eq!(registry(&sb)[&run_id]["status"], "interrupted");
    assert!(!wd.join(".final.mp4.partial").exists());

    let out = finish(
        spawn(&sb, &long, &wd, &["--resume"]),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(m["run_id"], json!(run_id));
    assert_verifies(&sb, &wd.join("final.mp4"), &m);
}

#[cfg(unix)]
#[test]
fn a_workdir_whose_name_is_not_utf8_works_with_status_and_resume() {
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    let sb = Sandbox::new();
    let odd = |name: &[u8]| {
        let mut b = sb.path().as_os_str().as_bytes().to_vec();
        b.push(b'/');
        b.extend_from_slice(name);
        PathBuf::from(std::ffi::OsString::from_vec(b))
    };
    let dir = odd(b"Stimme caf\xe9 100%");
    std::fs::create_dir(&dir).unwrap();
    let audio = dir.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000 * 40);
    let start = dir.join("face.png");
    write_face_png(&start, 160, 120);
    let wd = odd(b"run \xff\xfe");
    let child = Command::new(assert_cmd::cargo::cargo_bin("va"))
        .env("VA_STATE_DIR", sb.state_root())
        .env_remove("VA_LOG")
        .args(["produce", "--no-comfyui", "--max-width", "160", "--audio"])
        .arg(&audio)
        .arg("--start")
        .arg(&start)
        .arg("--workdir")
        .arg(&wd)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_phase(&wd, "encode");
    signal(&child, "INT");
    let out = finish(child, Duration::from_secs(30));
    assert_eq!(out.status.code(), Some(130), "{}", stderr_of(&out));

    // Stored without loss: the registry and job.json spell the bytes in the escaped form.
    let reg = read_json(&sb.runs_json());
    let entry = &reg["runs"][0];
    let escaped = format!(
        "{}/run %FF%FE",
        sb.path().to_str().unwrap().replace('%', "%25")
    );
    assert_eq!(entry["workdir"], json!({"escaped": escaped}), "{entry}");
    let job_json = read_json(&wd.join("job.json"));
    assert_eq!(
        job_json["audio"]["escaped"],
        json!(format!(
            "{}/Stimme caf%E9 100%25/voice.wav",
            sb.path().to_str().unwrap().replace('%', "%25")
        ))
    );

    // `va status DIR` reads it (the argument is bytes), and so does `va logs DIR`.
    let out = sb.va().arg("status").arg(&wd).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(stdout_of(&out).contains("status     interrupted"));
    let out = sb.va().arg("logs").arg(&wd).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));

    // The job the run wrote continues it.
    let out = finish(
        spawn(&sb, &wd.join("job.json"), &wd, &["--resume"]),
        Duration::from_secs(300),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(m["run_status"], "completed");
    assert_eq!(
        m["final"],
        json!({"escaped": format!("{escaped}/fertig.mp4")})
    );
    assert_verifies(&sb, &wd.join("fertig.mp4"), &m);
}

/// A picture the machine has no memory for ends with its code and on record, not in an
/// abort: a header claiming 40000×25000 pixels (allowed by `limits.max_image_pixels`), run
/// with 2 GiB of address space, needs 3 GB for its pixels.
#[test]
fn an_image_too_big_for_the_memory_is_an_error_not_an_abort() {
    let sb = Sandbox::new();
    let png = sb.join("huge.png");
    header_only_png(&png, 40_000, 25_000);
    let j = job(
        &sb,
        "huge",
        1,
        json!({"start_image": png, "limits": {"max_image_pixels": 1_000_000_000u64}}),
    );
    let wd = sb.join("wd");
    let out = Command::new("prlimit")
        .arg(format!("--as={}", 2u64 << 30))
        .arg(assert_cmd::cargo::cargo_bin("va"))
        .arg("run")
        .arg(&j)
        .arg("--workdir")
        .arg(&wd)
        .env("VA_STATE_DIR", sb.state_root())
        .env_remove("VA_LOG")
        .output()
        .expect("prlimit (util-linux)");
    assert_eq!(out.status.code(), Some(70), "{}", stderr_of(&out));
    let line = error_line(&out);
    assert!(
        line.contains("INTERNAL") && line.contains("huge.png") && line.contains("memory"),
        "{line}"
    );
    // The preflight decodes the start picture whole, so the allocation fails there, before
    // the run got an id: refused like any other bad input, nothing written (docs/ERRORS.md).
    assert!(!wd.join("manifest.json").exists());
    assert!(!sb.runs_json().exists() || registry(&sb).is_empty());
}

/// How many times `va run JOB --workdir WD` (under `strace -f -e trace=openat,open`) opens
/// each of `inputs`; `None` when strace cannot trace here (missing, or ptrace refused).
fn opens_per_input(sb: &Sandbox, job: &Path, wd: &Path, inputs: &[&Path]) -> Option<Vec<usize>> {
    let log = sb.join(&format!(
        "{}.strace",
        wd.file_name().unwrap().to_string_lossy()
    ));
    let out = Command::new("strace")
        .args(["-f", "-qq", "-e", "trace=openat,open", "-o"])
        .arg(&log)
        .arg(assert_cmd::cargo::cargo_bin("va"))
        .arg("run")
        .arg(job)
        .arg("--workdir")
        .arg(wd)
        .env("VA_STATE_DIR", sb.state_root())
        .env_remove("VA_LOG")
        .output();
    let out = match out {
        Ok(o) if log.is_file() => o,
        _ => return None,
    };
    let text = std::fs::read_to_string(&log).unwrap();
    if !text.contains("openat(") {
        // strace ran but could not trace (ptrace refused in this container).
        return None;
    }
    assert!(out.status.success(), "va run: {}", stderr_of(&out));
    Some(
        inputs
            .iter()
            .map(|p| {
                let quoted = format!("\"{}\"", p.display());
                text.lines().filter(|l| l.contains(&quoted)).count()
            })
            .collect(),
    )
}

/// Issue 12, admit once: a run probes each input once at admission (hash, kind, size, the
/// checks) and opens it once more to decode it; no stage opens an input to look at it again.
#[test]
fn a_run_opens_each_input_at_most_twice_probe_and_decode() {
    let sb = Sandbox::new();
    let demo = root().join("fixtures/demo");
    for f in ["voice.wav", "face.png", "end.png", "job.json"] {
        std::fs::copy(demo.join(f), sb.join(f)).unwrap();
    }
    let (audio, face, end) = (
        sb.join("voice.wav"),
        sb.join("face.png"),
        sb.join("end.png"),
    );
    let Some(counts) = opens_per_input(
        &sb,
        &sb.join("job.json"),
        &sb.join("wd-image"),
        &[&audio, &face, &end],
    ) else {
        eprintln!("skipped: strace cannot trace here");
        return;
    };
    for (name, n) in ["audio", "start image", "end image"].iter().zip(&counts) {
        assert!(*n <= 2, "the {name} was opened {n} times (at most 2)");
    }
    let clip = sb.join("clip.mp4");
    std::fs::copy(root().join("fixtures/video/d7a3bd3815c03965.mp4"), &clip).unwrap();
    let j = sb.write_job(
        "video.json",
        &json!({
            "audio": audio, "start_video": clip, "end_image": end,
            "buffer": {"pre_seconds": 0.2, "post_seconds": 0.4},
            "determinism": {"fps": 25, "seed": 3},
            "render": {"max_width": 160, "max_height": 120},
            "comfyui": {"enable": false},
        }),
    );
    let counts = opens_per_input(&sb, &j, &sb.join("wd-video"), &[&audio, &clip, &end])
        .expect("strace traced the first run");
    for (name, n) in ["audio", "start video", "end image"].iter().zip(&counts) {
        assert!(*n <= 2, "the {name} was opened {n} times (at most 2)");
    }
    // Through ComfyUI (the project's test server): the default lip-sync of the staged still,
    // and the motion + mouth-blend graphs, which are sent the start image itself. Staging
    // and the upload read the start through the handle admission opened.
    use comfy_server::{Config, Server};
    let srv = Server::start(Config::default());
    for (name, workflows) in [
        ("lipsync", json!(["vidax_wav2lip_image_audio"])),
        (
            "blend",
            json!([
                "vidax_faceprobe",
                "vidax_motion_chunks",
                "vidax_lipsync_mouthblend"
            ]),
        ),
    ] {
        let j = sb.write_job(
            &format!("{name}.json"),
            &json!({
                "audio": audio, "start_image": face, "end_image": end,
                "buffer": {"pre_seconds": 0.2, "post_seconds": 0.4},
                "determinism": {"fps": 25, "seed": 3},
                "render": {"max_width": 160, "max_height": 120},
                "lipsync": {"enable": true},
                "comfyui": {"enable": true, "url": srv.url, "poll_interval_ms": 50,
                    "workflow_ids": workflows},
            }),
        );
        let wd = sb.join(&format!("wd-{name}"));
        let uploads = srv.state.uploads.lock().unwrap().len();
        let counts = opens_per_input(&sb, &j, &wd, &[&audio, &face, &end])
            .expect("strace traced the first run");
        let m = read_json(&wd.join("manifest.json"));
        assert_eq!(
            m["video_source_detail"]["comfyui_output"], "frames",
            "{name}"
        );
        assert!(srv.state.uploads.lock().unwrap().len() > uploads, "{name}");
        for (input, n) in ["audio", "start image", "end image"].iter().zip(&counts) {
            assert!(
                *n <= 2,
                "{name}: the {input} was opened {n} times (at most 2)"
            );
        }
    }
}
