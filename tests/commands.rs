//! `va doctor`, `va status` and `va logs` against a real run.

mod common;

use common::*;
use serde_json::json;

#[test]
fn doctor_json_exits_0_and_reports_libx264_and_aac() {
    let sb = Sandbox::new();
    let out = sb
        .va()
        .args(["doctor", "--json", "--skip-comfyui"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr_of(&out));
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("doctor --json prints JSON");
    assert_eq!(v["ok"], true, "{v}");
    let checks = v["checks"].as_array().expect("checks list");
    for want in ["libx264", "aac"] {
        let c = checks
            .iter()
            .find(|c| {
                c["name"]
                    .as_str()
                    .is_some_and(|n| n.contains("encoder") && n.contains(want))
            })
            .unwrap_or_else(|| panic!("no encoder check for {want}: {v}"));
        assert_eq!(c["ok"], true, "{c}");
    }
}

fn one_run(sb: &Sandbox) -> (std::path::PathBuf, String) {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("face.png");
    write_face_png(&start, 160, 120);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start,
            "determinism": { "fps": 25, "seed": 11 },
            "render": { "max_width": 160, "max_height": 120 },
            "comfyui": { "enable": false },
        }),
    );
    let wd = sb.join("wd");
    let (_, m) = sb.run_ok(&job, &wd);
    (wd, m["run_id"].as_str().expect("run_id").to_string())
}

#[test]
fn status_lists_the_run_by_workdir_and_from_the_registry() {
    let sb = Sandbox::new();
    let (wd, id) = one_run(&sb);

    let out = sb.va().arg("status").arg(&wd).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(
        text.contains(&id),
        "status <workdir> names the run {id}:\n{text}"
    );
    assert!(text.contains("completed"), "{text}");
    let frames = text
        .lines()
        .find(|l| l.starts_with("frames"))
        .unwrap_or_else(|| panic!("no frames line:\n{text}"));
    assert!(
        frames.contains(" 25 at 25 fps"),
        "1 s at 25 fps is 25 frames: {frames}"
    );

    let out = sb.va().args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    let runs = v.as_array().expect("a list of runs");
    assert_eq!(runs.len(), 1, "{v}");
    assert_eq!(runs[0]["id"], id.as_str());
    assert_eq!(runs[0]["status"], "completed");
    assert_eq!(
        std::path::PathBuf::from(runs[0]["workdir"].as_str().unwrap()),
        wd
    );

    // By run id, too.
    let out = sb.va().args(["status", &id, "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["run_id"], id.as_str());
    assert_eq!(m["target_frames"], 25);
}

#[test]
fn logs_prints_lines_and_json_lines_have_ts_level_stage_msg() {
    let sb = Sandbox::new();
    let (wd, _) = one_run(&sb);

    let out = sb.va().arg("logs").arg(&wd).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 4, "expected several log lines:\n{text}");
    for stage in ["prepare", "encode", "finalize"] {
        assert!(text.contains(stage), "no {stage} line in:\n{text}");
    }

    let out = sb.va().arg("logs").arg(&wd).arg("--json").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        for k in ["ts", "level", "stage", "msg"] {
            assert!(v[k].is_string(), "{k} missing in {line}");
        }
        n += 1;
    }
    assert_eq!(n, lines.len(), "--json prints one line per event");
    let phases: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["msg"] == "phase started")
        .map(|v| v["stage"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(
        phases.contains(&"encode".to_string()),
        "phase started events: {phases:?}"
    );
}

#[test]
fn verify_exits_nonzero_when_an_expectation_fails() {
    let sb = Sandbox::new();
    let (wd, _) = one_run(&sb);
    let fin = wd.join("final.mp4");
    let ok = sb
        .va()
        .arg("verify")
        .arg(&fin)
        .args([
            "--fps",
            "25",
            "--expect-frames",
            "25",
            "--expect-audio",
            "1.0",
        ])
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}{}",
        stdout_of(&ok),
        stderr_of(&ok)
    );
    for bad in [
        vec!["--expect-frames", "26"],
        vec!["--fps", "30000/1001"],
        vec!["--expect-audio", "1.01"],
    ] {
        let out = sb
            .va()
            .arg("verify")
            .arg(&fin)
            .args(&bad)
            .arg("--json")
            .output()
            .unwrap();
        assert_ne!(out.status.code(), Some(0), "verify {bad:?} must fail");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).expect("JSON report even on failure");
        assert_eq!(v["ok"], false, "{bad:?}: {v}");
        assert!(
            !v["failures"].as_array().unwrap().is_empty(),
            "{bad:?}: {v}"
        );
    }
}

#[test]
fn produce_accepts_the_seed_snake_case_aliases() {
    let sb = Sandbox::new();
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("face.png");
    write_face_png(&start, 640, 480);
    let wd = sb.join("wd");
    let out = sb
        .va()
        .args([
            "produce",
            "--no_comfyui",
            "--max_width",
            "160",
            "--max_height",
            "160",
            "--fps",
            "29.97",
            "--audio",
        ])
        .arg(&audio)
        .arg("--start")
        .arg(&start)
        .arg("--workdir")
        .arg(&wd)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let v = stream(&wd.join("fertig.mp4"), "video");
    assert_eq!(
        (v["width"].as_u64(), v["height"].as_u64()),
        (Some(160), Some(120))
    );
    assert_eq!(v["r_frame_rate"], "30000/1001");
    // 1 s at 30000/1001 = 29.97 → 30 frames.
    assert_eq!(count_video_frames(&wd.join("fertig.mp4")), 30);
}

#[test]
fn run_resolves_relative_paths_against_the_job_folder() {
    let sb = Sandbox::new();
    let jobs = sb.join("jobs");
    std::fs::create_dir_all(jobs.join("media")).unwrap();
    write_wav(&jobs.join("media/voice.wav"), 16_000, 1, 16_000);
    write_face_png(&jobs.join("media/face.png"), 160, 120);
    let job = jobs.join("job.json");
    let doc = json!({
        "audio": "media/voice.wav", "start_image": "media/face.png",
        "determinism": { "fps": 25, "seed": 2 },
        "render": { "max_width": 160, "max_height": 120 },
        "comfyui": { "enable": false },
    });
    std::fs::write(&job, doc.to_string()).unwrap();
    // Run from the sandbox root, not from the job's folder.
    let (fin, _) = sb.run_ok(&job, &sb.join("wd"));
    assert_eq!(count_video_frames(&fin), 25);
    // The effective job in the workdir has absolute paths.
    let eff = read_json(&sb.join("wd/job.json"));
    let a = eff["audio"].as_str().expect("audio in the effective job");
    assert!(std::path::Path::new(a).is_absolute(), "{a}");
    assert_eq!(
        std::fs::canonicalize(a).unwrap(),
        std::fs::canonicalize(jobs.join("media/voice.wav")).unwrap()
    );
}
