//! The run registry under concurrency (SPEC §5): no entry is ever lost.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;

use common::*;
use serde_json::json;

#[test]
fn twenty_concurrent_runs_leave_twenty_registry_entries() {
    const RUNS: usize = 20;
    let sb = Sandbox::new();
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 12_000); // 0.75 s
    let start = sb.join("face.png");
    write_face_png(&start, 160, 120);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start,
            "determinism": { "fps": 25, "seed": 5 },
            "render": { "max_width": 160, "max_height": 120 },
            "comfyui": { "enable": false },
        }),
    );
    let bin = assert_cmd::cargo::cargo_bin("va");
    let workdirs: Vec<PathBuf> = (0..RUNS).map(|i| sb.join(&format!("wd{i}"))).collect();
    let children: Vec<_> = workdirs
        .iter()
        .map(|wd| {
            std::process::Command::new(&bin)
                .env("VA_STATE_DIR", sb.state_root())
                .arg("run")
                .arg(&job)
                .arg("--workdir")
                .arg(wd)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn va")
        })
        .collect();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "run {i} failed ({:?}): {}",
            out.status.code(),
            stderr_of(&out)
        );
    }

    let text = std::fs::read_to_string(sb.runs_json()).expect("runs.json exists");
    let reg: serde_json::Value = serde_json::from_str(&text).expect("runs.json is valid JSON");
    let runs = reg["runs"]
        .as_array()
        .expect("runs.json has a \"runs\" list");
    assert_eq!(runs.len(), RUNS, "registry entries: {text}");

    let ids: HashSet<&str> = runs.iter().map(|r| r["id"].as_str().expect("id")).collect();
    assert_eq!(ids.len(), RUNS, "run ids must be distinct");
    let got: HashSet<PathBuf> = runs
        .iter()
        .map(|r| PathBuf::from(r["workdir"].as_str().unwrap()))
        .collect();
    let want: HashSet<PathBuf> = workdirs.iter().cloned().collect();
    assert_eq!(got, want, "every workdir registered once");
    for r in runs {
        assert_eq!(r["status"], "completed", "entry {r}");
        assert_eq!(r["exit_status"], 0, "entry {r}");
        let fin = PathBuf::from(r["final"].as_str().expect("final recorded"));
        assert!(fin.is_file(), "final {} missing", fin.display());
        // The registry and the workdir's manifest name the same run.
        let m = read_json(&PathBuf::from(r["workdir"].as_str().unwrap()).join("manifest.json"));
        assert_eq!(m["run_id"], r["id"]);
    }

    // `va status --json` reads the same eight runs back.
    let out = sb.va().args(["status", "--json"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let listed: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("status --json is JSON");
    assert_eq!(listed.as_array().map(Vec::len), Some(RUNS));
}
