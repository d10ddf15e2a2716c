//! The manifest's JSON shape against docs/OUTPUT_CONTRACT.md (issue 12, "a typed record"):
//! real runs (without ComfyUI from a start image and from a start video, and against the
//! ComfyUI test server with the default lip-sync) write exactly the documented top-level keys
//! in the documented order, phases in the documented order with only the keys the phase key
//! table lists, and records whose keys are those of the contract's examples (`audio`,
//! `video_source_detail`, `verify`, `phases.prepare.start_video`, `lipsync_meta` inside
//! ComfyUI). The doc is parsed here, so the test fails when either side drifts.
//!
//! `--resume` reads `prepare`'s saved plan (`prepare/plan.json`) instead of preparing again,
//! and prepares again when the plan is missing or the job asks for something else.

#[path = "common/comfy_server.rs"]
mod comfy_server;
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use comfy_server::{mp4_of, write_png, Config, Server};
use common::*;
use serde_json::{json, Value};

const CONTRACT: &str = include_str!("../docs/OUTPUT_CONTRACT.md");

/// The text after the line `heading` up to the next heading.
fn section(heading: &str) -> &'static str {
    let start = CONTRACT
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("OUTPUT_CONTRACT.md lacks the heading {heading:?}"));
    let rest = &CONTRACT[start + heading.len() + 2..];
    rest.find("\n#").map_or(rest, |end| &rest[..end])
}

/// The names in backticks of `text`, in order.
fn code_spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// The documented top-level keys: the first column of the "Top-level keys" table, in order.
fn top_level_keys() -> Vec<String> {
    section("### Top-level keys")
        .lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| code_spans(l).into_iter().next())
        .collect()
}

/// The phase key table (`| phase | keys |`): (phase or "every phase", keys), in order.
fn phase_keys() -> Vec<(String, BTreeSet<String>)> {
    section("### `phases`")
        .lines()
        .filter(|l| l.starts_with('|') && l.matches('|').count() == 3)
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            let phase = cells[0].trim_matches('`').to_string();
            (phase != "phase" && phase != "---")
                .then(|| (phase, code_spans(cells[1]).into_iter().collect()))
        })
        .collect()
}

/// The first `json` example under `heading`.
fn example(heading: &str) -> Value {
    let text = section(heading);
    let body = text
        .split_once("```json\n")
        .and_then(|(_, rest)| rest.split_once("\n```"))
        .unwrap_or_else(|| panic!("no JSON example under {heading:?}"))
        .0;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("example under {heading:?}: {e}"))
}

/// The first-column names of the field table under `heading`.
fn field_table(heading: &str) -> BTreeSet<String> {
    section(heading)
        .lines()
        .filter(|l| l.starts_with("| `"))
        .flat_map(|l| code_spans(l.split('|').nth(1).unwrap_or_default()))
        .collect()
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .unwrap_or_else(|| panic!("not an object: {v}"))
        .keys()
        .cloned()
        .collect()
}

/// `written` has the keys of `documented`, and so have their objects below (lists are not
/// compared: their length is the run's).
fn same_keys(what: &str, written: &Value, documented: &Value) {
    assert_eq!(
        keys(written),
        keys(documented),
        "{what}: written (left) and documented (right) keys differ"
    );
    for (k, d) in documented.as_object().unwrap() {
        if d.is_object() && written[k].is_object() {
            same_keys(&format!("{what}.{k}"), &written[k], d);
        }
    }
}

/// What every manifest of a completed run must show, whatever its inputs.
fn check_shape(m: &Value) {
    let top: Vec<String> = m.as_object().unwrap().keys().cloned().collect();
    assert_eq!(top, top_level_keys(), "top-level keys or their order");
    let table = phase_keys();
    let (common, per_phase) = table.split_first().expect("a phase key table");
    assert_eq!(common.0, "every phase");
    let phases: Vec<&String> = per_phase.iter().map(|(n, _)| n).collect();
    let written: Vec<&String> = m["phases"].as_object().unwrap().keys().collect();
    assert_eq!(written, phases, "phases or their order");
    for (name, own) in per_phase {
        let allowed: BTreeSet<String> = common.1.union(own).cloned().collect();
        let extra: Vec<String> = keys(&m["phases"][name])
            .difference(&allowed)
            .cloned()
            .collect();
        assert!(
            extra.is_empty(),
            "phase {name} writes undocumented keys {extra:?}"
        );
    }
    assert_eq!(m["seeds"].as_object().map(|o| o.len()), Some(2));
    same_keys("audio", &m["audio"], &example("### `audio`"));
    same_keys(
        "video_source_detail",
        &m["video_source_detail"],
        &example("### `video_source_detail`"),
    );
    assert_eq!(
        keys(&m["video_source_detail"]),
        field_table("### `video_source_detail`")
    );
    same_keys("verify", &m["verify"], &example("### `verify`"));
    assert_eq!(
        m["effective_params"]["determinism"]["seed"], m["seeds"]["value"],
        "effective_params carries the seed used"
    );
}

/// A job without ComfyUI: 1 s of 16 kHz speech and `start` (`start_image` or `start_video`).
fn plain_job(sb: &Sandbox, start_field: &str, start: &Path) -> PathBuf {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    sb.write_job(
        "job.json",
        &json!({
            "audio": audio, start_field: start,
            "buffer": {"pre_seconds": 0.2, "post_seconds": 0.2},
            "determinism": {"fps": 25, "seed": 3},
            "render": {"max_width": 64, "max_height": 48},
            "comfyui": {"enable": false},
        }),
    )
}

#[test]
fn a_run_without_comfyui_writes_the_documented_shape() {
    let sb = Sandbox::new();
    let start = sb.join("face.png");
    write_face_png(&start, 64, 48);
    let job = plain_job(&sb, "start_image", &start);
    let wd = sb.join("run");
    let (_, m) = sb.run_ok(&job, &wd);
    check_shape(&m);
    for p in ["faceprobe", "comfyui", "lipsync"] {
        assert_eq!(m["phases"][p]["status"], "skipped", "{p}");
        assert!(m["phases"][p]["reason"].is_string(), "{p}");
    }
    let prepare = &m["phases"]["prepare"];
    assert_eq!(
        keys(prepare),
        phase_keys()[0]
            .1
            .iter()
            .chain(&phase_keys()[1].1)
            .filter(|k| *k != "reason")
            .cloned()
            .collect(),
        "a completed prepare writes every key of its row"
    );
    assert_eq!(prepare["start_video"], Value::Null);
    assert_eq!(m["phases"]["encode"]["passes"], 1);
    assert!(m["phases"]["encode"]["report"]["video_frames"].is_u64());
    assert_eq!(m["motion_meta"]["source"], "local");
    assert_eq!(m["face_meta"], Value::Null);
    assert_eq!(m["lipsync_meta"], Value::Null);
    assert_eq!(m["comfyui"], Value::Null);
}

#[test]
fn a_run_from_a_start_video_writes_the_documented_start_video_record() {
    let sb = Sandbox::new();
    let pngs: Vec<Vec<u8>> = (0..30u8)
        .map(|k| {
            let p = sb.join("f.png");
            write_png(&p, 64, 48, [k * 8, 100, 200 - k * 4]);
            std::fs::read(&p).unwrap()
        })
        .collect();
    let clip = sb.join("clip.mp4");
    std::fs::write(&clip, mp4_of(&pngs, 25.0)).unwrap();
    let job = plain_job(&sb, "start_video", &clip);
    let wd = sb.join("run");
    let (_, m) = sb.run_ok(&job, &wd);
    check_shape(&m);
    let sv = &m["phases"]["prepare"]["start_video"];
    same_keys(
        "phases.prepare.start_video",
        sv,
        &example("### `phases.prepare.start_video`"),
    );
    assert_eq!(keys(sv), field_table("### `phases.prepare.start_video`"));
    assert_eq!(m["motion_meta"], Value::Null);
}

#[test]
fn a_run_with_comfyui_writes_the_documented_shape() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("face.png");
    write_png(&start, 64, 48, [200, 150, 120]);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start,
            "buffer": {"pre_seconds": 0.5, "post_seconds": 0.5},
            "determinism": {"fps": 25, "seed": 11, "seed_policy": "fixed"},
            "comfyui": {"enable": true, "url": srv.url, "poll_interval_ms": 50,
                        "workflow_ids": ["vidax_wav2lip_image_audio"]},
            "lipsync": {"enable": true},
        }),
    );
    let wd = sb.join("run");
    let out = sb
        .va()
        .env_remove("COMFYUI_INPUT_DIR")
        .env_remove("COMFYUI_DIR")
        .arg("run")
        .arg(&job)
        .arg("--workdir")
        .arg(&wd)
        .timeout(std::time::Duration::from_secs(120))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = read_json(&wd.join("manifest.json"));
    check_shape(&m);
    let face = &m["phases"]["faceprobe"];
    assert_eq!(face["status"], "completed");
    for k in [
        "staged",
        "prompt_ids",
        "attempts",
        "method",
        "found",
        "face_meta",
    ] {
        assert!(face.get(k).is_some(), "phases.faceprobe.{k}: {face}");
    }
    assert!(m["phases"]["comfyui"].get("system_stats").is_some());
    assert_eq!(m["lipsync_meta"]["where"], "inside_comfy");
    same_keys(
        "lipsync_meta",
        &m["lipsync_meta"],
        &example("### `lipsync_meta` inside ComfyUI"),
    );
    assert_eq!(m["face_meta"]["source"], "comfyui");
    assert!(m["comfyui"]["workflows"]["vidax_wav2lip_image_audio"].is_object());
}

fn resume(sb: &Sandbox, job: &Path, wd: &Path) -> Value {
    let out = sb
        .va()
        .arg("run")
        .arg(job)
        .arg("--workdir")
        .arg(wd)
        .arg("--resume")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    read_json(&wd.join("manifest.json"))
}

fn events(wd: &Path) -> String {
    std::fs::read_to_string(wd.join("logs/events.jsonl")).unwrap()
}

#[test]
fn resume_reads_the_saved_plan_and_prepares_again_when_it_cannot() {
    let sb = Sandbox::new();
    let start = sb.join("face.png");
    write_face_png(&start, 64, 48);
    let job = plain_job(&sb, "start_image", &start);
    let wd = sb.join("run");
    let (final_path, first) = sb.run_ok(&job, &wd);
    let plan = read_json(&wd.join("prepare/plan.json"));
    assert_eq!(plan["version"], 1);
    assert_eq!(
        plan["plan"]["frames"]["target_frames"],
        first["target_frames"]
    );
    assert_eq!(
        plan["plan"]["audio"]["pre_samples"],
        first["audio"]["pre_samples"]
    );
    let started = |m: &Value| m["phases"]["prepare"]["started_at"].clone();

    // The final gone, --resume makes it again from the saved plan: prepare is not run again.
    std::fs::remove_file(&final_path).unwrap();
    let again = resume(&sb, &job, &wd);
    assert_eq!(started(&again), started(&first));
    assert!(events(&wd).contains("reusing prepare/plan.json"));
    assert_eq!(again["target_frames"], first["target_frames"]);
    assert!(final_path.is_file());

    // Without a plan (a workdir of an earlier version), prepare runs again, saying why.
    std::fs::remove_file(&final_path).unwrap();
    std::fs::remove_file(wd.join("prepare/plan.json")).unwrap();
    let third = resume(&sb, &job, &wd);
    assert_ne!(started(&third), started(&first));
    assert!(events(&wd).contains("resume: prepare runs again: prepare/plan.json"));
    assert!(wd.join("prepare/plan.json").is_file());

    // A job that asks for another timeline prepares again too.
    std::fs::remove_file(&final_path).unwrap();
    let mut j = read_json(&job);
    j["buffer"]["post_seconds"] = json!(0.6);
    std::fs::write(&job, j.to_string()).unwrap();
    let fourth = resume(&sb, &job, &wd);
    assert_ne!(started(&fourth), started(&third));
    assert!(events(&wd).contains("resume: prepare runs again: the buffers changed"));
    assert_eq!(
        fourth["audio"]["post_samples"],
        json!(28_800),
        "0.6 s at 48 kHz"
    );
}
