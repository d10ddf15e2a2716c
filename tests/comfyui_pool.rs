//! Issue 16: one run over a pool of ComfyUI servers (project test servers of different
//! speeds, `common/comfy_server.rs`), the main segment in chunks. The chunks spread by queue
//! depth (the faster server takes more), several in flight at once; the frames carry their
//! timeline index, so the final proves they landed in order; a server killed mid-run has its
//! chunks redone elsewhere without any prompt running twice on one server; `--resume` after
//! an interruption submits only the chunks that are missing.

#[path = "common/comfy_server.rs"]
mod comfy_server;
mod common;

use std::path::{Path, PathBuf};

use comfy_server::{read_frame, write_png, Config, Server, Tag};
use common::*;
use serde_json::{json, Value};

const W: u32 = 64;
const H: u32 = 48;
const END: [u8; 3] = [0, 160, 0];
const WAV2LIP: &str = "VIDAX_Wav2Lip";

/// 1 s of speech, a 64×48 start image, an end image; `comfyui` merged into the job's.
fn job(sb: &Sandbox, urls: Value, comfyui: Value) -> PathBuf {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("face.png");
    write_png(&start, W, H, [200, 150, 120]);
    let end = sb.join("end.png");
    write_png(&end, W, H, END);
    let mut c = json!({"enable": true, "url": urls, "poll_interval_ms": 20,
        "retry": {"attempts": 3, "backoff_ms": 20}, "chunk_size": 3});
    for (k, v) in comfyui.as_object().unwrap() {
        c[k] = v.clone();
    }
    sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start, "end_image": end,
            "buffer": {"pre_seconds": 0.5, "post_seconds": 1.0},
            "determinism": {"fps": 25, "seed": 11, "seed_policy": "fixed"},
            "comfyui": c,
            "lipsync": {"enable": true},
        }),
    )
}

fn run(sb: &Sandbox, job: &Path, workdir: &Path, resume: bool) -> std::process::Output {
    let mut c = sb.va();
    c.env_remove("COMFYUI_INPUT_DIR")
        .env_remove("COMFYUI_DIR")
        .env_remove("COMFYUI_URL")
        .arg("run")
        .arg(job)
        .arg("--workdir")
        .arg(workdir);
    if resume {
        c.arg("--resume");
    }
    c.timeout(std::time::Duration::from_secs(180))
        .output()
        .unwrap()
}

fn manifest(workdir: &Path) -> Value {
    read_json(&workdir.join("manifest.json"))
}

/// The final's main frames are ComfyUI's Wav2Lip frames 0..main in order, then the end
/// image's hold, frame-exact.
fn assert_final_in_order(wd: &Path) {
    let m = manifest(wd);
    let target = m["target_frames"].as_u64().unwrap();
    let main = target - m["hold_frames"].as_u64().unwrap();
    let final_path = wd.join("final.mp4");
    assert_eq!(count_video_frames(&final_path), target);
    let frames: Vec<(u64, [u8; 3])> = decode_rgb(&final_path, W, H)
        .iter()
        .map(|f| read_frame(f, W, H))
        .collect();
    assert_eq!(frames.len() as u64, target);
    for (i, (index, tag)) in frames.iter().enumerate() {
        if (i as u64) < main {
            assert_eq!(*index, i as u64, "frame {i} shows ComfyUI frame {index}");
            assert!(
                max_diff(*tag, Tag::Wav2Lip.colour()) <= 40,
                "frame {i}: {tag:?}"
            );
        } else {
            assert!(max_diff(*tag, END) <= 40, "hold frame {i}: {tag:?}");
        }
    }
}

/// The `start_frame` of every chunk graph `srv` received.
fn chunk_starts(srv: &Server) -> Vec<u64> {
    let mut v: Vec<u64> = srv
        .graphs_with(WAV2LIP)
        .iter()
        .map(|g| {
            g.as_object()
                .unwrap()
                .values()
                .find(|n| n["class_type"] == WAV2LIP)
                .unwrap()["inputs"]["start_frame"]
                .as_u64()
                .unwrap()
        })
        .collect();
    v.sort_unstable();
    v
}

/// A server that runs one prompt at a time (as ComfyUI does), each for `run_ms`.
fn slow(run_ms: u64) -> Config {
    Config {
        run_ms,
        serial: true,
        ..Config::default()
    }
}

/// Every chunk of the record completed, and the chunks cover 0..main once each.
fn assert_chunks_cover(m: &Value, main: u64) -> Vec<Value> {
    let wf = &m["comfyui"]["workflows"]["vidax_wav2lip_image_audio"];
    let chunks = wf["chunks"].as_array().unwrap().clone();
    assert_eq!(chunks.len() as u64, wf["chunk_count"].as_u64().unwrap());
    let mut next = 0;
    for c in &chunks {
        assert_eq!(c["status"], "completed", "{c}");
        assert_eq!(c["start"].as_u64().unwrap(), next, "{c}");
        assert!(c["prompt_id"].as_str().is_some_and(|p| p.len() == 36));
        assert!(c["attempts"].as_u64().unwrap() >= 1);
        next += c["frames"].as_u64().unwrap();
    }
    assert_eq!(next, main);
    chunks
}

fn main_frames(m: &Value) -> u64 {
    m["target_frames"].as_u64().unwrap() - m["hold_frames"].as_u64().unwrap()
}

/// How many of `chunks` endpoint `url` delivered.
fn delivered_by(chunks: &[Value], url: &str) -> usize {
    chunks.iter().filter(|c| c["endpoint"] == url).count()
}

#[test]
fn two_servers_share_the_chunks_by_queue_depth_and_the_faster_takes_more() {
    let sb = Sandbox::new();
    let fast = Server::start(slow(20));
    let slow = Server::start(slow(600));
    let job = job(&sb, json!([fast.url, slow.url]), json!({}));
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    let main = main_frames(&m);
    let chunks = assert_chunks_cover(&m, main);
    assert!(chunks.len() >= 10, "{} chunks", chunks.len());
    let (f, s) = (chunk_starts(&fast), chunk_starts(&slow));
    assert!(!s.is_empty(), "both servers worked");
    assert!(f.len() > s.len(), "the faster took more: {f:?} vs {s:?}");
    // Each chunk ran once, on one server (no retry was needed), and the record says where.
    let mut all: Vec<u64> = f.iter().chain(&s).copied().collect();
    all.sort_unstable();
    let starts: Vec<u64> = chunks
        .iter()
        .map(|c| c["start"].as_u64().unwrap())
        .collect();
    assert_eq!(all, starts);
    assert_eq!(delivered_by(&chunks, &fast.url), f.len());
    assert_eq!(delivered_by(&chunks, &slow.url), s.len());
    assert!(fast.max_executions() <= 1 && slow.max_executions() <= 1);
    // Several in flight at once: the slow server held two of ours (one running, one queued).
    assert_eq!(
        slow.state
            .max_queued
            .load(std::sync::atomic::Ordering::SeqCst),
        2
    );
    let eps = m["comfyui"]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 2);
    assert_eq!(eps[0]["url"], fast.url.as_str());
    assert_eq!(eps[0]["status"], "usable");
    assert_eq!(eps[0]["chunks_completed"], f.len() as u64);
    assert_eq!(eps[1]["chunks_completed"], s.len() as u64);
    assert_eq!(m["comfyui"]["chunk_size_source"], "job");
    assert_eq!(m["video_source_detail"]["degraded"], false);
    // The effect check saw every frame: the reports of all chunks merged.
    assert_eq!(m["lipsync_meta"]["verdict"], "lip_synced");
    assert_eq!(m["lipsync_meta"]["frames_sent"], main);
    assert_final_in_order(&wd);
}

#[test]
fn a_server_whose_queue_is_long_with_other_work_gets_the_first_chunks_last() {
    let sb = Sandbox::new();
    // The first of the pool, and faster, but five prompts of someone else wait there.
    let busy = Server::start(Config {
        foreign_queue: 5,
        ..slow(20)
    });
    let idle = Server::start(slow(100));
    let job = job(&sb, json!([busy.url, idle.url]), json!({}));
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    let chunks = assert_chunks_cover(&m, main_frames(&m));
    // The shortest queue first: the first two chunks went to the idle server.
    assert_eq!(chunks[0]["endpoint"], idle.url.as_str(), "{chunks:?}");
    assert_eq!(chunks[1]["endpoint"], idle.url.as_str(), "{chunks:?}");
    assert_eq!(chunk_starts(&idle)[..2], [0, 3]);
    assert_final_in_order(&wd);
}

#[test]
fn three_servers_a_comma_separated_url_and_one_that_is_down() {
    let sb = Sandbox::new();
    let fast = Server::start(slow(10));
    let mid = Server::start(slow(150));
    let slow = Server::start(slow(700));
    // A fourth endpoint that is not there: left out and recorded, the run goes on.
    let down = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let urls = format!("{},{}, {},{down}", fast.url, mid.url, slow.url);
    let job = job(&sb, json!(urls), json!({"chunk_size": 2}));
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    let chunks = assert_chunks_cover(&m, main_frames(&m));
    let counts: Vec<usize> = [&fast, &mid, &slow]
        .iter()
        .map(|s| chunk_starts(s).len())
        .collect();
    assert!(counts.iter().all(|&n| n > 0), "{counts:?}");
    assert!(counts[0] > counts[2], "the fastest took more: {counts:?}");
    assert_eq!(counts.iter().sum::<usize>(), chunks.len());
    let eps = m["comfyui"]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 4);
    assert_eq!(eps[3]["url"], down.as_str());
    assert_eq!(eps[3]["status"], "unavailable");
    assert!(eps[3]["reason"].as_str().unwrap().contains(&down));
    assert_eq!(m["video_source_detail"]["degraded"], false);
    assert_final_in_order(&wd);
}

#[test]
fn no_usable_server_in_the_pool_is_comfyui_unavailable() {
    let sb = Sandbox::new();
    let down: Vec<String> = (0..2)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        })
        .collect();
    let job = job(&sb, json!(down), json!({}));
    let out = run(&sb, &job, &sb.join("run"), false);
    assert_eq!(out.status.code(), Some(30), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(err.contains("no ComfyUI of comfyui.url is usable"), "{err}");
    assert!(err.contains(&down[0]) && err.contains(&down[1]), "{err}");
}

/// A run over two servers, the first of which takes the face check and two chunks, then
/// dies before either chunk finishes; it must succeed. The servers and the workdir.
fn run_with_a_server_that_dies(sb: &Sandbox, comfyui: Value) -> (Server, Server, PathBuf) {
    let dying = Server::start(Config {
        die_after_posts: Some(3),
        ..slow(300)
    });
    let other = Server::start(slow(20));
    let job = job(sb, json!([dying.url, other.url]), comfyui);
    let wd = sb.join("run");
    let out = run(sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    (dying, other, wd)
}

#[test]
fn a_server_killed_mid_run_has_its_chunks_redone_elsewhere() {
    let sb = Sandbox::new();
    let (dying, other, wd) = run_with_a_server_that_dies(&sb, json!({}));
    assert!(dying.state.killed.load(std::sync::atomic::Ordering::SeqCst));
    let m = manifest(&wd);
    let chunks = assert_chunks_cover(&m, main_frames(&m));
    assert_eq!(m["video_source_detail"]["degraded"], false);
    assert!(m["comfyui"]["failure"].is_null());
    // The dead server delivered nothing; its two chunks were redone on the other.
    let lost = chunk_starts(&dying);
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert_eq!(delivered_by(&chunks, &dying.url), 0);
    assert_eq!(delivered_by(&chunks, &other.url), chunks.len());
    for c in chunks
        .iter()
        .filter(|c| lost.contains(&c["start"].as_u64().unwrap()))
    {
        assert_eq!(c["attempts"], 2, "{c}");
    }
    let eps = m["comfyui"]["endpoints"].as_array().unwrap();
    assert_eq!(eps[0]["status"], "died");
    assert_eq!(eps[1]["status"], "usable");
    // Never a prompt twice on one server; the redone chunks went out under new prompt ids.
    assert!(dying.max_executions() <= 1 && other.max_executions() <= 1);
    let attempts = m["comfyui"]["attempts"].as_array().unwrap();
    let ids: std::collections::HashSet<&str> = attempts
        .iter()
        .map(|a| a["prompt_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), attempts.len());
    assert_eq!(
        attempts
            .iter()
            .filter(|a| a["endpoint"] == dying.url.as_str())
            .count(),
        2
    );
    assert_final_in_order(&wd);
}

/// Regression: the second chunk a dead server held was counted as a failed attempt (the
/// server had been left out by the first, so only one was usable and the check for a dead
/// server was skipped); with `retry.attempts: 1` losing one of two servers degraded the run.
#[test]
fn a_dead_servers_every_chunk_goes_elsewhere_without_counting_as_an_attempt() {
    let sb = Sandbox::new();
    let (dying, other, wd) =
        run_with_a_server_that_dies(&sb, json!({"retry": {"attempts": 1, "backoff_ms": 20}}));
    let m = manifest(&wd);
    assert_eq!(
        m["video_source_detail"]["degraded"], false,
        "{}",
        m["comfyui"]
    );
    assert!(
        m["comfyui"]["failure"].is_null(),
        "{}",
        m["comfyui"]["failure"]
    );
    let chunks = assert_chunks_cover(&m, main_frames(&m));
    let lost = chunk_starts(&dying);
    assert_eq!(lost.len(), 2, "{lost:?}");
    assert_eq!(delivered_by(&chunks, &other.url), chunks.len());
    assert_eq!(m["comfyui"]["endpoints"][0]["status"], "died");
    assert_final_in_order(&wd);
}

#[test]
fn resume_after_an_interruption_submits_only_the_missing_chunks() {
    let sb = Sandbox::new();
    let srv = Server::start(slow(150));
    let job_path = job(&sb, json!(srv.url), json!({}));
    let wd = sb.join("run");
    // The run is killed (SIGKILL) once its manifest records three finished chunks.
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("va"))
        .env("VA_STATE_DIR", sb.state_root())
        .env_remove("VA_LOG")
        .env_remove("COMFYUI_INPUT_DIR")
        .env_remove("COMFYUI_DIR")
        .current_dir(sb.path())
        .arg("run")
        .arg(&job_path)
        .arg("--workdir")
        .arg(&wd)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let completed = |m: &Value| -> Vec<u64> {
        m["comfyui"]["workflows"]["vidax_wav2lip_image_audio"]["chunks"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|c| c["status"] == "completed")
                    .map(|c| c["start"].as_u64().unwrap())
                    .collect()
            })
            .unwrap_or_default()
    };
    let t0 = std::time::Instant::now();
    loop {
        let m = std::fs::read(wd.join("manifest.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok());
        if m.as_ref().is_some_and(|m| completed(m).len() >= 3) {
            break;
        }
        assert!(
            t0.elapsed().as_secs() < 120,
            "the run never got three chunks done"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended too early"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // A POST the killed run sent just before it died may still be on its way through the
    // server: count from when the server has seen nothing new for a while.
    let mut seen = (srv.posts(), std::time::Instant::now());
    while seen.1.elapsed() < std::time::Duration::from_millis(750) {
        std::thread::sleep(std::time::Duration::from_millis(25));
        if srv.posts() != seen.0 {
            seen = (srv.posts(), std::time::Instant::now());
        }
        assert!(t0.elapsed().as_secs() < 180, "the server never went quiet");
    }
    let m = manifest(&wd);
    let done = completed(&m);
    let total = m["comfyui"]["workflows"]["vidax_wav2lip_image_audio"]["chunk_count"]
        .as_u64()
        .unwrap() as usize;
    assert!(done.len() >= 3 && done.len() < total, "{done:?} of {total}");
    let posts_before = srv.posts();
    let graphs_before = srv.graphs_with(WAV2LIP).len();
    let out = run(&sb, &job_path, &wd, true);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    let chunks = assert_chunks_cover(&m, main_frames(&m));
    let missing: Vec<u64> = chunks
        .iter()
        .map(|c| c["start"].as_u64().unwrap())
        .filter(|s| !done.contains(s))
        .collect();
    // Only the missing chunks were submitted (the face check stood too).
    let mut resubmitted: Vec<u64> = srv.graphs_with(WAV2LIP)[graphs_before..]
        .iter()
        .map(|g| g["4"]["inputs"]["start_frame"].as_u64().unwrap())
        .collect();
    resubmitted.sort_unstable();
    assert_eq!(resubmitted, missing);
    assert_eq!((srv.posts() - posts_before) as usize, missing.len());
    for c in &chunks {
        let reused = done.contains(&c["start"].as_u64().unwrap());
        assert_eq!(c["reused"], reused, "{c}");
    }
    assert_eq!(m["lipsync_meta"]["verdict"], "lip_synced");
    assert_eq!(m["lipsync_meta"]["frames_sent"], main_frames(&m));
    assert_final_in_order(&wd);
}

#[test]
fn chunk_progress_goes_to_the_ndjson_stream_per_endpoint() {
    let sb = Sandbox::new();
    let a = Server::start(slow(20));
    let b = Server::start(slow(100));
    let job = job(&sb, json!([a.url, b.url]), json!({}));
    let wd = sb.join("run");
    let out = sb
        .va()
        .env_remove("COMFYUI_INPUT_DIR")
        .env_remove("COMFYUI_DIR")
        .args(["run", "--json"])
        .arg(&job)
        .arg("--workdir")
        .arg(&wd)
        .timeout(std::time::Duration::from_secs(180))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let lines: Vec<Value> = stdout_of(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["event"] == "chunks")
        .collect();
    let last = lines.last().expect("chunk progress lines");
    assert_eq!(last["chunks_done"], last["chunks_total"]);
    assert_eq!(last["frames_done"], last["frames_total"]);
    let per = last["endpoints"].as_array().unwrap();
    assert_eq!(per.len(), 2);
    let sum: u64 = per.iter().map(|e| e["chunks_done"].as_u64().unwrap()).sum();
    assert_eq!(sum, last["chunks_done"].as_u64().unwrap());
    assert_eq!(per[0]["url"], a.url.as_str());
    // It went up one chunk at a time.
    let done: Vec<u64> = lines
        .iter()
        .map(|l| l["chunks_done"].as_u64().unwrap())
        .collect();
    assert!(done.windows(2).all(|w| w[0] <= w[1]), "{done:?}");
    assert!(done.len() as u64 > last["chunks_total"].as_u64().unwrap());
}

#[test]
fn a_start_video_in_sequential_mode_sends_four_context_frames_each_side() {
    let sb = Sandbox::new();
    let a = Server::start(slow(20));
    let b = Server::start(slow(20));
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let end = sb.join("end.png");
    write_png(&end, W, H, END);
    let clip = sb.join("clip.mp4");
    let pngs: Vec<Vec<u8>> = (0..100)
        .map(|k| comfy_server::frame_png(k, W, H, Tag::Still))
        .collect();
    std::fs::write(&clip, comfy_server::mp4_of(&pngs, 25.0)).unwrap();
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_video": clip, "end_image": end,
            "buffer": {"pre_seconds": 0.5, "post_seconds": 1.0},
            "determinism": {"fps": 25, "seed": 3},
            "comfyui": {"enable": true, "url": [a.url, b.url], "poll_interval_ms": 20,
                        "chunk_size": 10},
            "lipsync": {"enable": true},
        }),
    );
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    let main = main_frames(&m);
    let chunks = assert_chunks_cover_video(&m, main);
    // What each chunk's VHS_LoadVideo read: its frames and 4 more on each side (as far as
    // the main segment goes).
    let mut loaded: Vec<Vec<u64>> = a.state.video_frames.lock().unwrap().clone();
    loaded.extend(b.state.video_frames.lock().unwrap().iter().cloned());
    loaded.sort();
    let expected: Vec<Vec<u64>> = chunks
        .iter()
        .map(|(s, f)| (s.saturating_sub(4)..(s + f + 4).min(main)).collect())
        .collect();
    assert_eq!(loaded, expected);
    assert_eq!(m["lipsync_meta"]["frames_sent"], main);
    assert_final_in_order(&wd);
}

fn assert_chunks_cover_video(m: &Value, main: u64) -> Vec<(u64, u64)> {
    let wf = &m["comfyui"]["workflows"]["vidax_wav2lip_video_audio"];
    let chunks: Vec<(u64, u64)> = wf["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            assert_eq!(c["status"], "completed", "{c}");
            (c["start"].as_u64().unwrap(), c["frames"].as_u64().unwrap())
        })
        .collect();
    assert!(chunks.len() > 2);
    assert_eq!(chunks.iter().map(|c| c.1).sum::<u64>(), main);
    chunks
}
