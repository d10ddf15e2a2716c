//! The GPU stage against the ComfyUI test server (`common/comfy_server.rs`, built from the
//! recorded answers): the final's main frames are ComfyUI's frames in order, every failure
//! ends with its code or a degraded final that names the reason, nothing waits unbounded, a
//! retry never runs a prompt twice, and `--resume` does not ask ComfyUI again.

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

/// 1 s of speech at 16 kHz, a 64×48 start image, a green end image.
fn inputs(sb: &Sandbox) -> (PathBuf, PathBuf, PathBuf) {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("face.png");
    write_png(&start, W, H, [200, 150, 120]);
    let end = sb.join("end.png");
    write_png(&end, W, H, END);
    (audio, start, end)
}

fn produce(sb: &Sandbox, srv: &Server, workdir: &Path) -> std::process::Output {
    let (audio, start, end) = inputs(sb);
    sb.va()
        .env("COMFYUI_URL", &srv.url)
        .env_remove("COMFYUI_INPUT_DIR")
        .env_remove("COMFYUI_DIR")
        .args(["produce", "--audio"])
        .arg(&audio)
        .arg("--start")
        .arg(&start)
        .arg("--end")
        .arg(&end)
        .args(["--pre", "0.5", "--post", "1", "--workdir"])
        .arg(workdir)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap()
}

/// A job for `va run` against `srv` with the test's short poll interval and `comfyui` merged in.
fn job(sb: &Sandbox, srv: &Server, comfyui: Value) -> PathBuf {
    let (audio, start, end) = inputs(sb);
    let mut c = json!({"enable": true, "url": srv.url, "poll_interval_ms": 50,
        "retry": {"attempts": 3, "backoff_ms": 50}});
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
        .arg("run")
        .arg(job)
        .arg("--workdir")
        .arg(workdir);
    if resume {
        c.arg("--resume");
    }
    c.timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap()
}

/// One `va run` of the inline start-image Wav2Lip workflow against a server with `cfg`.
struct Ran {
    sb: Sandbox,
    srv: Server,
    job: PathBuf,
    wd: PathBuf,
    out: std::process::Output,
}

fn run_wav2lip(cfg: Config, extra: Value) -> Ran {
    let sb = Sandbox::new();
    let srv = Server::start(cfg);
    let mut c = json!({"workflow_ids": ["vidax_wav2lip_image_audio"]});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let job = job(&sb, &srv, c);
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    Ran {
        sb,
        srv,
        job,
        wd,
        out,
    }
}

fn manifest(workdir: &Path) -> Value {
    read_json(&workdir.join("manifest.json"))
}

/// Each frame of `file` decoded at the render size: (barcode index, bottom band colour).
fn frames_of(file: &Path) -> Vec<(u64, [u8; 3])> {
    decode_rgb(file, W, H)
        .iter()
        .map(|f| read_frame(f, W, H))
        .collect()
}

fn close(a: [u8; 3], b: [u8; 3]) -> bool {
    max_diff(a, b) <= 40
}

fn main_and_hold(m: &Value) -> (u64, u64) {
    let t = m["target_frames"].as_u64().unwrap();
    let h = m["hold_frames"].as_u64().unwrap();
    (t - h, t)
}

#[test]
fn produce_takes_the_main_segment_from_comfyui_frames_in_order_and_holds_the_end_image() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let wd = sb.join("run");
    let out = produce(&sb, &srv, &wd);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    let (main, target) = main_and_hold(&m);
    // 0.5 + 1.0 + 1.0 s at 25 fps: 62.5 -> 63 frames, 25 of them the end hold.
    assert_eq!((main, target), (38, 63));
    let final_path = wd.join("fertig.mp4");
    assert_eq!(count_video_frames(&final_path), target);
    let frames = frames_of(&final_path);
    assert_eq!(frames.len() as u64, target);
    // The lip-synced still's frames, zoomed by the engine (the barcode survives a 10 % zoom).
    for (i, (index, tag)) in frames.iter().enumerate() {
        if (i as u64) < main {
            assert_eq!(*index, i as u64, "frame {i} shows ComfyUI frame {index}");
            assert!(close(*tag, Tag::Wav2Lip.colour()), "frame {i}: {tag:?}");
        } else {
            assert!(close(*tag, END), "hold frame {i}: {tag:?}");
        }
    }
    let c = &m["comfyui"];
    assert_eq!(c["workflow_id"], "vidax_wav2lip_image_audio");
    assert!(c["prompt_id"].as_str().is_some_and(|p| p.len() == 36));
    assert_eq!(c["chunk_count"], 1);
    assert_eq!(c["chunk_size"], main);
    assert_eq!(c["frames_received"], main);
    assert_eq!(c["inputs"]["staging"], "upload");
    let v = &m["video_source_detail"];
    assert_eq!(
        (
            v["start_source"].as_str(),
            v["comfyui_workflow_id"].as_str(),
            v["comfyui_output"].as_str(),
            v["lipsync"].as_str(),
            v["degraded"].as_bool()
        ),
        (
            Some("start_image"),
            Some("vidax_wav2lip_image_audio"),
            Some("frames"),
            Some("inside_comfy"),
            Some(false)
        )
    );
    // The face from the face check (the server's detector: the centre half), not from the
    // image size; the engine zooms about its centre.
    let f = &m["face_meta"];
    assert_eq!(f["face_box"], json!({"x": 16, "y": 12, "w": 32, "h": 24}));
    assert_eq!(
        (&f["method"], &f["source"]),
        (&json!("s3fd"), &json!("comfyui"))
    );
    assert!(wd.join("faceprobe/face_meta.json").is_file());
    assert!(wd.join("faceprobe/debug/face_crop.png").is_file());
    assert_eq!(m["phases"]["faceprobe"]["status"], "completed");
    assert_eq!(
        (&m["motion_meta"]["source"], &m["motion_meta"]["centre"]),
        (&json!("local"), &json!([32.0, 24.0]))
    );
    // The node's report and vidax's own check.
    let l = &m["lipsync_meta"];
    assert_eq!(l["where"], "inside_comfy");
    assert_eq!(l["workflow_id"], "vidax_wav2lip_image_audio");
    assert_eq!(
        (&l["report"], &l["synced"], &l["frames_sent"]),
        (&json!("node"), &json!(main), &json!(main))
    );
    assert_eq!(l["box_summary"]["x1"], json!([16, 16]));
    // 0.5 s of silence, then 1 s of tone: main frames 12..=37 (each [j/25, (j+1)/25) s)
    // have sound.
    assert_eq!(l["check"]["speech_frames"], 26);
    assert_eq!(l["check"]["frames_changed"], 26);
    assert_eq!(l["check"]["regions"]["reported_box"], 26);
    assert_eq!(l["verdict"], "lip_synced");
    assert!(wd.join(l["report_file"].as_str().unwrap()).is_file());
    for d in ["frames", "comfyui/staged"] {
        assert!(wd.join(d).is_dir(), "{d}");
    }
    assert!(wd.join(format!("frames/{main:06}.png")).is_file());
    assert!(!wd.join(format!("frames/{:06}.png", main + 1)).exists());
    for f in [
        "vidax_facecheck.graph.json",
        "vidax_facecheck.history.json",
        "vidax_wav2lip_image_audio.history.json",
    ] {
        assert!(wd.join("comfyui").join(f).is_file(), "{f}");
    }
    // The face check first, then the lip-sync of the staged still for the main segment only.
    let graphs = srv.graphs();
    assert_eq!(graphs.len(), 2);
    assert_eq!(graphs[0]["2"]["class_type"], "VIDAX_FaceProbe");
    let sync = &graphs[1];
    assert_eq!(sync["2"]["inputs"]["amount"], main);
    assert_eq!(sync["4"]["class_type"], "VIDAX_Wav2Lip");
    assert_eq!(
        graphs[0]["1"]["inputs"]["image"],
        sync["1"]["inputs"]["image"]
    );
    let uploads: Vec<String> = srv.state.uploads.lock().unwrap().keys().cloned().collect();
    assert!(
        uploads
            .iter()
            .any(|n| n.starts_with("vidax_audio_") && n.ends_with(".wav")),
        "{uploads:?}"
    );
    assert!(
        uploads
            .iter()
            .any(|n| n.starts_with("vidax_still_") && n.ends_with(".png")),
        "{uploads:?}"
    );
    // No graph loads the start file itself: it is neither read again nor sent.
    assert!(
        !uploads.iter().any(|n| n.starts_with("vidax_start_")),
        "{uploads:?}"
    );
    assert!(c["inputs"]["start"].is_null(), "{}", c["inputs"]);
    assert_eq!(srv.max_executions(), 1);
    // The progress socket was open before each POST.
    assert_eq!(
        srv.state
            .posts_without_socket
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
}

#[test]
fn chunks_and_shuffled_history_names_still_give_frames_in_timeline_order() {
    let sb = Sandbox::new();
    // Earlier files with the same prefix: the counters start at 00007. The server reads the
    // copied inputs from the same input folder the job names.
    let input_dir = sb.join("comfy_input");
    std::fs::create_dir_all(&input_dir).unwrap();
    let srv = Server::start(Config {
        counter_start: 6,
        input_dir: Some(input_dir.clone()),
        ..Config::default()
    });
    let job = job(
        &sb,
        &srv,
        json!({"chunk_size": 10, "input_dir": input_dir, "workflow_ids": ["vidax_wav2lip_image_audio"]}),
    );
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    let (main, _) = main_and_hold(&m);
    assert_eq!(m["comfyui"]["chunk_count"], 4);
    assert_eq!(m["comfyui"]["inputs"]["staging"], "copy");
    assert!(
        srv.state.uploads.lock().unwrap().is_empty(),
        "copied, not uploaded"
    );
    let staged: Vec<_> = std::fs::read_dir(&input_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        staged.iter().any(|n| n.starts_with("vidax_audio_")),
        "{staged:?}"
    );
    let frames = frames_of(&wd.join("final.mp4"));
    for (i, (index, tag)) in frames.iter().take(main as usize).enumerate() {
        assert_eq!(*index, i as u64);
        assert!(close(*tag, Tag::Wav2Lip.colour()), "frame {i}: {tag:?}");
    }
    assert_eq!(m["video_source_detail"]["lipsync"], "inside_comfy");
    // The same job again: ComfyUI serves it from its cache (same file names), same result.
    let wd2 = sb.join("run2");
    let out = run(&sb, &job, &wd2, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let again = frames_of(&wd2.join("final.mp4"));
    assert_eq!(
        again.iter().map(|f| f.0).collect::<Vec<_>>(),
        frames.iter().map(|f| f.0).collect::<Vec<_>>()
    );
    let h: Value = read_json(&wd2.join("comfyui/vidax_wav2lip_image_audio_chunk001.history.json"));
    assert_eq!(
        h["status"]["messages"][1][1]["nodes"]
            .as_array()
            .unwrap()
            .len(),
        5,
        "cached"
    );
}

#[test]
fn a_dropped_first_post_is_looked_up_not_submitted_twice() {
    let r = run_wav2lip(
        Config {
            drop_first_post: true,
            run_ms: 200,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    // The first POST is the face check's: its answer is lost, it is not posted again.
    assert_eq!(r.srv.posts(), 2, "each graph was posted once");
    assert_eq!(r.srv.max_executions(), 1);
    let m = manifest(&r.wd);
    assert_eq!(m["video_source_detail"]["degraded"], false);
    assert_eq!(
        m["phases"]["faceprobe"]["prompt_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(m["face_meta"]["method"], "s3fd");
    assert_eq!(m["comfyui"]["prompt_ids"].as_array().unwrap().len(), 1);
    // The answer really was lost, and the client looked instead of posting again.
    let log = std::fs::read_to_string(r.wd.join("logs/events.jsonl")).unwrap();
    assert!(log.contains("looking before posting again"), "{log}");
    assert!(log.contains("the server has the prompt: not posted again"));
}

#[test]
fn a_prompt_that_vanishes_from_the_queue_is_retried_under_a_new_id() {
    let r = run_wav2lip(
        Config {
            vanish: 1,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    // The first prompt (the face check) vanishes and is posted again; then the lip-sync.
    assert_eq!(r.srv.posts(), 3);
    assert_eq!(r.srv.max_executions(), 1);
    let m = manifest(&r.wd);
    assert_eq!(m["comfyui"]["attempts"].as_array().unwrap().len(), 1);
    let attempts = m["phases"]["faceprobe"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts[0]["result"].as_str().unwrap().contains("vanished"),
        "{attempts:?}"
    );
    assert_ne!(attempts[0]["prompt_id"], attempts[1]["prompt_id"]);
    assert_eq!(m["video_source_detail"]["degraded"], false);
}

#[test]
fn per_retry_draws_a_new_seed_for_each_attempt() {
    let sb = Sandbox::new();
    let srv = Server::start(Config {
        vanish: 2,
        ..Config::default()
    });
    write_template(
        &sb,
        "my_seeded",
        r#"{"1": {"class_type": "LoadImage", "inputs": {"image": "{{start_image}}"}},
            "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": "{{frames}}"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "seed_{{seed}}"}}}"#,
    );
    let job = job(&sb, &srv, json!({"workflow_ids": ["my_seeded"]}));
    let mut j = read_json(&job);
    j["determinism"] = json!({"fps": 25, "seed": 11, "seed_policy": "per_retry"});
    let job = sb.write_job("job.json", &j);
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let prefixes: Vec<String> = srv
        .graphs()
        .iter()
        .map(|g| {
            g["3"]["inputs"]["filename_prefix"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(prefixes.len(), 3);
    assert_eq!(prefixes[0], "seed_11");
    assert!(
        prefixes[1] != prefixes[0] && prefixes[2] != prefixes[1],
        "{prefixes:?}"
    );
    let m = manifest(&wd);
    assert_eq!(m["comfyui"]["workflow_id"], "my_seeded");
    // "{{frames}}" became the number: the still repeated for every main frame.
    let (main, _) = main_and_hold(&m);
    assert_eq!(srv.graphs()[2]["2"]["inputs"]["amount"], main);
    let frames = frames_of(&wd.join("final.mp4"));
    assert!(close(frames[0].1, Tag::Still.colour()));
}

/// Writes `<state dir>/config/workflows/<id>.json`.
fn write_template(sb: &Sandbox, id: &str, graph: &str) {
    let dir = sb.join("va-state/state/config/workflows");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{id}.json")), graph).unwrap();
}

fn assert_degraded(m: &Value, reason: &str) {
    let v = &m["video_source_detail"];
    assert_eq!(v["degraded"], true, "{v}");
    assert_eq!(v["degraded_reason"], reason, "{v}");
    assert_eq!(m["run_status"], "completed");
    assert_eq!(m["comfyui"]["failure"]["code"], reason);
}

#[test]
fn a_run_time_error_degrades_to_the_motion_frames_and_logs_the_history() {
    let sb = Sandbox::new();
    let srv = Server::start(Config {
        runtime_error_class: Some("VIDAX_Wav2Lip".into()),
        ..Config::default()
    });
    // The seed's workflows stay selectable: face check, motion chunks, mouth blend.
    let job = job(
        &sb,
        &srv,
        json!({"workflow_ids": ["vidax_faceprobe", "vidax_motion_chunks", "vidax_lipsync_mouthblend"]}),
    );
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    assert_degraded(&m, "COMFYUI_BAD_RESPONSE");
    let f = &m["comfyui"]["failure"];
    assert!(
        f["message"]
            .as_str()
            .unwrap()
            .contains("VIDAX_WEIGHTS_MISSING"),
        "{f}"
    );
    assert_eq!(f["details"]["output_keys"], json!([]));
    assert!(f["details"]["history_keys"]
        .as_array()
        .unwrap()
        .contains(&json!("status")));
    assert!(f["details"]["messages"]
        .to_string()
        .contains("execution_error"));
    assert_eq!(m["video_source_detail"]["lipsync"], "off");
    assert_eq!(
        m["video_source_detail"]["comfyui_workflow_id"],
        "vidax_motion_chunks"
    );
    let (main, _) = main_and_hold(&m);
    let frames = frames_of(&wd.join("final.mp4"));
    for (i, (index, tag)) in frames.iter().take(main as usize).enumerate() {
        assert_eq!(*index, i as u64);
        assert!(close(*tag, Tag::Motion.colour()), "frame {i}: {tag:?}");
    }
    let log = std::fs::read_to_string(wd.join("logs/events.jsonl")).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("history_keys"))
        .expect("a log line with the history summary");
    for k in ["output_keys", "messages", "node_errors"] {
        assert!(line.contains(k), "{line}");
    }
}

#[test]
fn a_missing_node_is_named_before_anything_is_submitted() {
    let sb = Sandbox::new();
    let srv = Server::start(Config {
        missing_classes: vec!["VIDAX_Wav2Lip".into()],
        ..Config::default()
    });
    let wd = sb.join("run");
    let out = produce(&sb, &srv, &wd);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    assert_degraded(&m, "COMFYUI_BAD_RESPONSE");
    assert!(m["comfyui"]["failure"]["message"]
        .as_str()
        .unwrap()
        .contains("VIDAX_Wav2Lip not installed: run va install, then restart ComfyUI"));
    // Only the face check was posted; the lip-sync graph was stopped by the preflight.
    assert_eq!(srv.posts(), 1);
    assert!(stderr_of(&out).contains("finished degraded"));
}

#[test]
fn no_outputs_degrade_to_the_local_motion_fallback() {
    let r = run_wav2lip(
        Config {
            no_outputs: true,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    let m = manifest(&r.wd);
    assert_degraded(&m, "COMFYUI_OUTPUTS_MISSING");
    assert_eq!(m["motion_meta"]["source"], "local");
    assert_eq!(m["video_source_detail"]["comfyui_output"], Value::Null);
    assert!(m["comfyui"]["action"]
        .as_str()
        .unwrap()
        .contains("local motion fallback"));
    // The fallback is the start image (no barcode): its colour, not a tag.
    let frames = frames_of(&r.wd.join("final.mp4"));
    assert!(close(frames[0].1, [200, 150, 120]), "{:?}", frames[0]);
    // --fail-on-degraded turns it into exit 3.
    let wd2 = r.sb.join("run2");
    let out2 =
        r.sb.va()
            .arg("run")
            .arg(&r.job)
            .arg("--workdir")
            .arg(&wd2)
            .arg("--fail-on-degraded")
            .output()
            .unwrap();
    assert_eq!(out2.status.code(), Some(3), "{}", stderr_of(&out2));
}

#[test]
fn too_few_frames_are_reported_not_stretched() {
    let r = run_wav2lip(
        Config {
            frame_shortfall: 3,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    let m = manifest(&r.wd);
    assert_degraded(&m, "COMFYUI_OUTPUTS_MISSING");
    let (main, target) = main_and_hold(&m);
    let msg = m["comfyui"]["failure"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!("received {} of {main} frames", main - 3)),
        "{msg}"
    );
    let d = &m["comfyui"]["failure"]["details"];
    assert_eq!(
        (d["frames_asked"].as_u64(), d["frames_received"].as_u64()),
        (Some(main), Some(main - 3))
    );
    assert!(m["comfyui"]["action"]
        .as_str()
        .unwrap()
        .contains("local motion fallback"));
    let frames = frames_of(&r.wd.join("final.mp4"));
    assert_eq!(frames.len() as u64, target);
    assert!(frames
        .iter()
        .take(main as usize)
        .all(|f| close(f.1, [200, 150, 120])));
}

#[test]
fn a_prompt_that_never_finishes_ends_with_comfyui_timeout() {
    let r = run_wav2lip(
        Config {
            run_ms: 600_000,
            ..Config::default()
        },
        json!({"timeout_seconds": 2}),
    );
    assert_eq!(r.out.status.code(), Some(35), "{}", stderr_of(&r.out));
    assert!(stderr_of(&r.out).contains("COMFYUI_TIMEOUT"));
    assert!(!r.wd.join("final.mp4").exists());
    assert_eq!(manifest(&r.wd)["error"]["code"], "COMFYUI_TIMEOUT");
    assert_eq!(r.srv.posts(), 1);
}

#[test]
fn a_slow_view_is_bounded_by_the_timeout() {
    let r = run_wav2lip(
        Config {
            view_delay_ms: 600_000,
            ..Config::default()
        },
        json!({"timeout_seconds": 2}),
    );
    assert_eq!(r.out.status.code(), Some(35), "{}", stderr_of(&r.out));
}

#[test]
fn resume_after_a_failed_encode_reuses_the_fetched_frames() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let job_path = job(&sb, &srv, json!({}));
    // The encode cannot write its output (a folder where its partial file goes), after
    // ComfyUI's part completed. (A cut-off end image no longer gets this far: the preflight
    // decodes the pictures, issue 15.)
    let wd = sb.join("run");
    let blocker = wd.join(".final.mp4.partial");
    std::fs::create_dir_all(&blocker).unwrap();
    let out = run(&sb, &job_path, &wd, false);
    assert!(!out.status.success());
    let m = manifest(&wd);
    assert_eq!(m["phases"]["comfyui"]["status"], "completed");
    assert_eq!(
        m["phases"]["encode"]["status"],
        "failed",
        "{}",
        stderr_of(&out)
    );
    let posts = srv.posts();
    assert_eq!(posts, 2);
    std::fs::remove_dir(&blocker).unwrap();
    let out = run(&sb, &job_path, &wd, true);
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert_eq!(srv.posts(), posts, "ComfyUI was not asked again");
    let m = manifest(&wd);
    assert_eq!(
        m["comfyui"]["workflows"]["vidax_wav2lip_image_audio"]["reused"],
        true
    );
    // The face check of the first attempt stands, and so does its lip-sync record.
    assert_eq!(m["phases"]["faceprobe"]["reused"], true);
    assert_eq!(m["face_meta"]["method"], "s3fd");
    assert_eq!(m["lipsync_meta"]["verdict"], "lip_synced");
    assert_eq!(
        m["comfyui"]["prompt_ids"].as_array().unwrap().len(),
        1,
        "kept from the first attempt"
    );
    assert_eq!(
        m["phases"]["faceprobe"]["prompt_ids"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(m["comfyui"]["workflow_id"], "vidax_wav2lip_image_audio");
    assert_eq!(m["video_source_detail"]["lipsync"], "inside_comfy");
    let (main, _) = main_and_hold(&m);
    let frames = frames_of(&wd.join("final.mp4"));
    for (i, (index, tag)) in frames.iter().enumerate() {
        if (i as u64) < main {
            assert_eq!(*index, i as u64);
            assert!(close(*tag, Tag::Wav2Lip.colour()));
        } else {
            assert!(close(*tag, END));
        }
    }
}

/// Runs the default start-image job with lip-sync provider `provider` into `<sandbox>/<dir>`,
/// asserting that the run completes; returns the workdir.
fn provider_run(sb: &Sandbox, srv: &Server, provider: &str, enable: bool, dir: &str) -> PathBuf {
    write_providers(sb, srv);
    let job = job(sb, srv, json!({}));
    let mut j = read_json(&job);
    j["lipsync"] = json!({"enable": enable, "provider": provider});
    let job = sb.write_job("job.json", &j);
    let wd = sb.join(dir);
    let out = run(sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    wd
}

fn write_providers(sb: &Sandbox, srv: &Server) {
    let dir = sb.join("va-state/state/config");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("lipsync.providers.json"),
        json!({"providers": {
            "copy": {"type": "command", "argv": ["cp", "{video}", "{output}"], "timeout_seconds": 30},
            "broken": {"type": "command", "argv": ["false"], "timeout_seconds": 30},
            "api": {"type": "http", "url": format!("{}/lipsync", srv.url), "timeout_seconds": 30},
        }})
        .to_string(),
    )
    .unwrap();
}

#[test]
fn an_external_command_provider_makes_the_main_segment() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let wd = provider_run(&sb, &srv, "copy", true, "run");
    let m = manifest(&wd);
    assert_eq!(m["video_source_detail"]["lipsync"], "external");
    assert_eq!(m["video_source_detail"]["degraded"], false);
    assert_eq!(m["lipsync_meta"]["status"], "completed");
    assert!(wd.join("lipsync/output.mp4").is_file());
    // No lip-sync graph in ComfyUI: the motion chunks are the base video the provider got,
    // zoomed about the face the face check found (the server's: the centre half).
    assert_eq!(m["comfyui"]["workflow_ids"], json!(["vidax_motion_chunks"]));
    let graphs = srv.graphs();
    assert_eq!(graphs[0]["2"]["class_type"], "VIDAX_FaceProbe");
    let motion = &graphs[1]["2"]["inputs"];
    assert_eq!(
        (&motion["centre_x"], &motion["centre_y"]),
        (&json!(32.0), &json!(24.0))
    );
    let (main, _) = main_and_hold(&m);
    let frames = frames_of(&wd.join("final.mp4"));
    for (i, (index, tag)) in frames.iter().take(main as usize).enumerate() {
        assert_eq!(*index, i as u64);
        assert!(close(*tag, Tag::Motion.colour()));
    }
}

#[test]
fn an_http_provider_is_posted_the_video_and_audio() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let wd = provider_run(&sb, &srv, "api", true, "run");
    assert_eq!(
        srv.state
            .lipsync_posts
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
    let m = manifest(&wd);
    assert_eq!(m["video_source_detail"]["lipsync"], "external");
    assert_eq!(m["video_source_detail"]["degraded"], false);
}

#[test]
fn a_failing_provider_degrades_and_a_disabled_one_is_ignored() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let wd = provider_run(&sb, &srv, "broken", true, "run");
    let m = manifest(&wd);
    assert_eq!(
        m["video_source_detail"]["degraded_reason"],
        "LIPSYNC_FAILED"
    );
    assert_eq!(m["video_source_detail"]["lipsync"], "off");
    assert_eq!(m["lipsync_meta"]["error"]["code"], "LIPSYNC_FAILED");
    let wd = provider_run(&sb, &srv, "copy", false, "run2");
    let m = manifest(&wd);
    assert_eq!(m["lipsync_meta"]["status"], "ignored");
    assert_eq!(m["phases"]["lipsync"]["status"], "skipped");
    assert!(!wd.join("lipsync").exists());
}

#[test]
fn a_workflow_id_without_a_template_is_a_validation_error() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let job = job(&sb, &srv, json!({"workflow_ids": ["nowhere_to_be_found"]}));
    let out = run(&sb, &job, &sb.join("run"), false);
    assert_eq!(out.status.code(), Some(10), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("comfyui.workflow_ids[0]: no workflow \"nowhere_to_be_found\"")
    );
}

#[test]
fn a_start_video_goes_through_vhs_loadvideo_and_wav2lip_frame_for_frame() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let (audio, _, end) = inputs(&sb);
    // A 64×48 clip of 100 frames at 25 fps (the start video's own pictures are never shown
    // here: ComfyUI's frames replace them).
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
            "comfyui": {"enable": true, "url": srv.url, "poll_interval_ms": 50},
            "lipsync": {"enable": true},
        }),
    );
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    let (main, _) = main_and_hold(&m);
    let graphs = srv.graphs();
    assert_eq!(graphs.len(), 2);
    // The face check over the first, middle and last main frame.
    let check = graphs[0].as_object().unwrap();
    assert_eq!(check.len(), 6);
    assert!(graphs[0]["5"]["inputs"]["image"]
        .as_str()
        .unwrap()
        .starts_with("vidax_frame_"));
    let probes: Vec<&Value> = m["face_meta"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(
        probes
            .iter()
            .map(|p| p["frame"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [0, main / 2, main - 1]
    );
    // The staged clip of exactly the main segment, read at its own rate and size.
    let g = &graphs[1];
    let load = &g["1"]["inputs"];
    assert_eq!(g["1"]["class_type"], "VHS_LoadVideo");
    assert_eq!(
        (
            &load["force_rate"],
            &load["custom_width"],
            &load["custom_height"]
        ),
        (&json!(0), &json!(0), &json!(0))
    );
    assert_eq!(
        (&load["frame_load_cap"], &load["skip_first_frames"]),
        (&json!(main), &json!(0))
    );
    let name = load["video"].as_str().unwrap();
    assert!(
        name.starts_with("vidax_clip_") && name.ends_with(".mov"),
        "{name}"
    );
    assert_eq!(
        *srv.state.video_frames.lock().unwrap(),
        [(0..main).collect::<Vec<u64>>()],
        "ComfyUI got the start video's frames 0..main in order"
    );
    let v = &m["video_source_detail"];
    assert_eq!(v["start_source"], "start_video");
    assert_eq!(v["comfyui_workflow_id"], "vidax_wav2lip_video_audio");
    assert_eq!(v["lipsync"], "inside_comfy");
    assert_eq!(v["degraded"], false);
    let l = &m["lipsync_meta"];
    assert_eq!(
        (&l["workflow_id"], &l["report"], &l["synced"], &l["verdict"]),
        (
            &json!("vidax_wav2lip_video_audio"),
            &json!("node"),
            &json!(main),
            &json!("lip_synced")
        )
    );
    assert_eq!(l["check"]["frames_changed"], l["check"]["speech_frames"]);
    assert_eq!(l["check"]["speech_frames"], 26);
    for (i, (index, tag)) in frames_of(&wd.join("final.mp4")).iter().enumerate() {
        if (i as u64) < main {
            assert_eq!(*index, i as u64);
            assert!(close(*tag, Tag::Wav2Lip.colour()), "frame {i}: {tag:?}");
        } else {
            assert!(close(*tag, END), "hold frame {i}");
        }
    }
}

/// A `frames`-frame 64×48 clip at 25 fps whose frame `k` carries barcode `k`.
fn barcode_clip(sb: &Sandbox, frames: u64) -> PathBuf {
    let clip = sb.join("clip.mp4");
    let pngs: Vec<Vec<u8>> = (0..frames)
        .map(|k| comfy_server::frame_png(k, W, H, Tag::Still))
        .collect();
    std::fs::write(&clip, comfy_server::mp4_of(&pngs, 25.0)).unwrap();
    clip
}

#[test]
fn a_short_start_video_reaches_comfyui_extended_by_pingpong_frame_for_frame() {
    // A 3-frame clip and 1.6 s of speech: 40 main frames, the clip played 0 1 2 1 0 1 2 1 …
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 25_600);
    let clip = barcode_clip(&sb, 3);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_video": clip,
            "video": {"extend": "pingpong"},
            "comfyui": {"enable": true, "url": srv.url, "poll_interval_ms": 50},
            "lipsync": {"enable": true},
        }),
    );
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    assert_eq!(main_and_hold(&m), (40, 40));
    let pingpong: Vec<u64> = (0..40).map(|i| [0, 1, 2, 1][i % 4]).collect();
    assert_eq!(*srv.state.video_frames.lock().unwrap(), [pingpong]);
    // The count was checked before submitting: the clip holds exactly the main segment.
    assert_eq!(count_video_frames(&wd.join("comfyui/staged/main.mov")), 40);
    // The face check saw main frames 0, 20 and 39: clip frames 0, 0 and 1.
    for (p, want) in m["face_meta"]["probes"]
        .as_array()
        .unwrap()
        .iter()
        .zip([0, 0, 1])
    {
        let img = image::open(wd.join(p["file"].as_str().unwrap()))
            .unwrap()
            .to_rgb8();
        assert_eq!(read_frame(img.as_raw(), W, H).0, want, "{p}");
    }
    assert_eq!(m["video_source_detail"]["degraded"], false);
    assert_eq!(m["lipsync_meta"]["verdict"], "lip_synced");
}

#[test]
fn a_lip_sync_that_returns_unchanged_frames_is_degraded_lipsync_no_effect() {
    // The node claims every frame synced and returns them as they came (issue 11's bug).
    let r = run_wav2lip(
        Config {
            wav2lip_identity: true,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    let m = manifest(&r.wd);
    assert_degraded(&m, "LIPSYNC_NO_EFFECT");
    let v = &m["video_source_detail"];
    assert_eq!(
        v["lipsync"], "off",
        "no inside_comfy for a lip-sync that changed nothing"
    );
    let l = &m["lipsync_meta"];
    assert_eq!(l["verdict"], "no_effect");
    assert_eq!(l["synced"], 38, "what the node claims");
    let c = &l["check"];
    assert_eq!(
        (
            &c["speech_frames"],
            &c["frames_changed"],
            &c["frames_unchanged"],
            &c["synced_unchanged"]
        ),
        (&json!(26), &json!(0), &json!(26), &json!(26))
    );
    let msg = m["comfyui"]["failure"]["message"].as_str().unwrap();
    assert!(
        msg.contains("changed the face region in 0 of 26 speech frames")
            && msg.contains("the node reports 38 of 38 frames lip-synced"),
        "{msg}"
    );
    assert_eq!(
        m["comfyui"]["workflows"]["vidax_wav2lip_image_audio"]["status"],
        "no_effect"
    );
    assert!(stderr_of(&r.out).contains("finished degraded"));
    // The final's main segment is the local motion fallback (the start image's colour).
    let frames = frames_of(&r.wd.join("final.mp4"));
    assert!(close(frames[20].1, [200, 150, 120]), "{:?}", frames[20]);
}

#[test]
fn a_start_video_lip_sync_that_changes_nothing_is_degraded_too() {
    let sb = Sandbox::new();
    let srv = Server::start(Config {
        wav2lip_identity: true,
        ..Config::default()
    });
    let (audio, _, _) = inputs(&sb);
    let clip = barcode_clip(&sb, 60);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_video": clip, "buffer": {"pre_seconds": 0.5},
            "comfyui": {"enable": true, "url": srv.url, "poll_interval_ms": 50},
            "lipsync": {"enable": true},
        }),
    );
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    assert_degraded(&m, "LIPSYNC_NO_EFFECT");
    assert_eq!(m["video_source_detail"]["lipsync"], "off");
    assert_eq!(m["lipsync_meta"]["check"]["frames_changed"], 0);
    // The start video itself is the fallback: its barcodes, not ComfyUI's tag.
    let frames = frames_of(&wd.join("final.mp4"));
    assert_eq!(frames[30].0, 30);
    assert!(close(frames[30].1, Tag::Still.colour()), "{:?}", frames[30]);
}

#[test]
fn no_face_fails_at_once_with_on_no_face_error() {
    let r = run_wav2lip(
        Config {
            no_face: true,
            ..Config::default()
        },
        json!({"wav2lip": {"on_no_face": "error"}}),
    );
    assert_eq!(r.out.status.code(), Some(33), "{}", stderr_of(&r.out));
    let err = stderr_of(&r.out);
    assert!(
        err.contains("COMFYUI_FACE_NOT_FOUND") && err.contains("no face found"),
        "{err}"
    );
    // Only the face check was sent: no long GPU job.
    assert_eq!(r.srv.posts(), 1);
    let m = manifest(&r.wd);
    assert_eq!(m["error"]["code"], "COMFYUI_FACE_NOT_FOUND");
    assert_eq!(m["face_meta"]["found"], false);
    assert_eq!(m["phases"]["faceprobe"]["status"], "failed");
    assert_eq!(m["phases"]["comfyui"]["status"], "pending");
}

#[test]
fn no_face_skips_the_lip_sync_graph_with_passthrough() {
    let r = run_wav2lip(
        Config {
            no_face: true,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    assert_eq!(r.srv.posts(), 1, "the lip-sync graph was not sent");
    let m = manifest(&r.wd);
    assert_degraded(&m, "COMFYUI_FACE_NOT_FOUND");
    assert!(m["comfyui"]["failure"]["message"]
        .as_str()
        .unwrap()
        .contains("no face found in comfyui/staged/still.png"));
    assert_eq!(
        m["comfyui"]["workflows"]["vidax_wav2lip_image_audio"]["status"],
        "skipped"
    );
    assert_eq!(m["video_source_detail"]["lipsync"], "off");
    assert_eq!(m["motion_meta"]["source"], "local");
}

#[test]
fn a_face_check_without_reports_falls_back_to_the_size_heuristic_on_record() {
    let r = run_wav2lip(
        Config {
            no_reports: true,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    let m = manifest(&r.wd);
    let f = &m["face_meta"];
    assert_eq!(
        (&f["method"], &f["source"]),
        (&json!("size_heuristic"), &json!("local"))
    );
    assert!(f["fallback_reason"]
        .as_str()
        .unwrap()
        .contains("sent no vidax_face report"));
    assert!(m["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("the size heuristic stands in")));
    // Without the node's report the check compares inside the face box, and the frames did
    // change there.
    let l = &m["lipsync_meta"];
    assert_eq!(
        (&l["report"], &l["synced"]),
        (&json!("missing"), &Value::Null)
    );
    assert_eq!(l["check"]["regions"]["face_box"], 26);
    assert_eq!(l["verdict"], "lip_synced");
    assert_eq!(m["video_source_detail"]["degraded"], false);
}

#[test]
fn a_face_probe_without_its_detector_says_so_in_the_record() {
    // The node's recorded fallback (a 512×512 picture): the run goes on, on record.
    let r = run_wav2lip(
        Config {
            face_fallback: true,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    let m = manifest(&r.wd);
    let f = &m["face_meta"];
    assert_eq!(
        (&f["method"], &f["source"]),
        (&json!("size_heuristic"), &json!("comfyui"))
    );
    assert!(f["fallback_reason"]
        .as_str()
        .unwrap()
        .starts_with("VIDAX_PACK_MISSING"));
    assert_eq!(m["phases"]["faceprobe"]["method"], "size_heuristic");
    assert!(m["warnings"].as_array().unwrap().iter().any(|w| w
        .as_str()
        .unwrap()
        .contains("VIDAX_FaceProbe used size_heuristic")));
}

#[test]
fn the_mouth_blend_follows_the_boxes_wav2lip_reports() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let job = job(
        &sb,
        &srv,
        json!({"workflow_ids": ["vidax_faceprobe", "vidax_motion_chunks", "vidax_lipsync_mouthblend"]}),
    );
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let graphs = srv.graphs();
    assert_eq!(graphs.len(), 3, "face check, motion, mouth blend");
    let blend = &graphs[2]["7"]["inputs"];
    assert_eq!(blend["lipsync_report"], json!(["6", 1]));
    // The mouth ROI and centre from the detected face (its lower half), not the image size.
    assert_eq!(
        (
            &blend["mouth_x"],
            &blend["mouth_y"],
            &blend["mouth_w"],
            &blend["mouth_h"]
        ),
        (&json!(16), &json!(24), &json!(32), &json!(12))
    );
    assert_eq!(
        (&blend["centre_x"], &blend["centre_y"]),
        (&json!(32.0), &json!(24.0))
    );
    let m = manifest(&wd);
    assert_eq!(m["video_source_detail"]["lipsync"], "inside_comfy");
    let l = &m["lipsync_meta"];
    assert_eq!(
        (&l["workflow_id"], &l["frames_dir"], &l["verdict"]),
        (
            &json!("vidax_lipsync_mouthblend"),
            &json!("mouthblend/frames"),
            &json!("lip_synced")
        )
    );
    assert_eq!(l["check"]["regions"]["reported_box"], 26);
    // The motion and blend graphs load the start file itself: it was sent, under the
    // name the graphs use.
    let start = m["comfyui"]["inputs"]["start"].as_str().unwrap();
    assert!(start.starts_with("vidax_start_"), "{start}");
    assert!(srv.state.uploads.lock().unwrap().contains_key(start));
    assert_eq!(graphs[1]["1"]["inputs"]["image"], start);
}

#[test]
fn a_job_without_a_seed_runs_and_records_the_seed_it_drew() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    write_template(
        &sb,
        "seeded",
        r#"{"1": {"class_type": "LoadImage", "inputs": {"image": "{{start_image}}"}},
            "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": "{{frames}}"}},
            "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "seed_{{seed}}"}}}"#,
    );
    let job = job(&sb, &srv, json!({"workflow_ids": ["seeded"]}));
    let mut j = read_json(&job);
    j.as_object_mut().unwrap().remove("determinism");
    let job = sb.write_job("job.json", &j);
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    assert_eq!(m["seeds"]["policy"], "random");
    let seed = m["seeds"]["value"]
        .as_u64()
        .expect("a drawn seed on record");
    assert_eq!(m["effective_params"]["determinism"]["seed"], seed);
    // The job as run (job.json) keeps the job's own: no seed.
    assert_eq!(
        read_json(&wd.join("job.json"))["determinism"]["seed"],
        Value::Null
    );
    assert_eq!(
        srv.graphs()[0]["3"]["inputs"]["filename_prefix"],
        format!("seed_{seed}")
    );
}

#[test]
fn a_video_output_under_gifs_becomes_the_main_segment() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    write_template(
        &sb,
        "combine",
        r#"{"1": {"class_type": "LoadImage", "inputs": {"image": "{{start_image}}"}},
            "2": {"class_type": "RepeatImageBatch", "inputs": {"image": ["1", 0], "amount": "{{frames}}"}},
            "3": {"class_type": "VHS_VideoCombine", "inputs": {"images": ["2", 0], "frame_rate": "{{fps}}",
                  "loop_count": 0, "filename_prefix": "vidax_combine", "format": "video/h264-mp4",
                  "pingpong": false, "save_output": true}}}"#,
    );
    let job = job(&sb, &srv, json!({"workflow_ids": ["combine"]}));
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    assert_eq!(m["video_source_detail"]["comfyui_output"], "video");
    assert_eq!(m["video_source_detail"]["degraded"], false);
    assert!(wd.join("comfyui/comfyui_video.mp4").is_file());
    let (main, _) = main_and_hold(&m);
    let frames = frames_of(&wd.join("final.mp4"));
    for (i, (index, tag)) in frames.iter().take(main as usize).enumerate() {
        assert_eq!(*index, i as u64, "video frame {i}");
        assert!(close(*tag, Tag::Still.colour()), "frame {i}: {tag:?}");
    }
}

#[test]
fn a_start_image_too_small_for_a_face_box_is_comfyui_face_not_found() {
    // Without a face probe in this ComfyUI the size heuristic stands in, and a 2×2 picture
    // has no face box at all.
    let sb = Sandbox::new();
    let srv = Server::start(Config {
        missing_classes: vec!["VIDAX_FaceProbe".into()],
        ..Config::default()
    });
    let job = job(&sb, &srv, json!({}));
    write_png(&sb.join("face.png"), 2, 2, [10, 10, 10]);
    let wd = sb.join("run");
    let out = run(&sb, &job, &wd, false);
    assert_eq!(out.status.code(), Some(33), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("too small for a face box"));
    assert_eq!(srv.posts(), 0);
}

#[test]
fn a_graph_comfyui_rejects_is_degraded_with_its_node_errors() {
    // The job names an input folder this ComfyUI does not read: the copied start image is not
    // there for it, and POST /prompt answers 400 as recorded (custom_validation_failed).
    let elsewhere = tempfile::tempdir().unwrap();
    let r = run_wav2lip(Config::default(), json!({"input_dir": elsewhere.path()}));
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    let m = manifest(&r.wd);
    assert_degraded(&m, "COMFYUI_BAD_RESPONSE");
    let f = &m["comfyui"]["failure"];
    let msg = f["message"].as_str().unwrap();
    assert!(
        msg.contains(
            "ComfyUI rejected the graph (400 Bad Request): Prompt outputs failed validation"
        ),
        "{msg}"
    );
    assert!(
        msg.contains("custom_validation_failed image - Invalid image file: vidax_still_"),
        "{msg}"
    );
    assert_eq!(f["details"]["node_errors"]["1"]["class_type"], "LoadImage");
    // A 400 is not retried: the face check's graph (refused the same way; the size
    // heuristic stood in) and the lip-sync graph were posted once each.
    assert_eq!(r.srv.posts(), 2);
    assert_eq!(manifest(&r.wd)["face_meta"]["method"], "size_heuristic");
}

#[test]
fn a_prompt_that_vanishes_on_every_attempt_degrades_after_the_retries() {
    let r = run_wav2lip(
        Config {
            vanish: 10,
            ..Config::default()
        },
        json!({}),
    );
    assert!(r.out.status.success(), "{}", stderr_of(&r.out));
    assert_eq!(
        r.srv.posts(),
        6,
        "comfyui.retry.attempts for the face check, then the lip-sync"
    );
    assert_eq!(r.srv.max_executions(), 0);
    let m = manifest(&r.wd);
    assert_degraded(&m, "COMFYUI_BAD_RESPONSE");
    let msg = m["comfyui"]["failure"]["message"].as_str().unwrap();
    assert!(
        msg.contains("gave up after 3 attempts") && msg.contains("vanished"),
        "{msg}"
    );
}
