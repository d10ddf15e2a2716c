//! The engine is in-process (SPEC §1): `va run` and `va produce` work with no `ffmpeg`/`ffprobe`
//! on PATH, and never try to start one.

mod common;

use std::path::Path;

use common::*;
use serde_json::json;

fn inputs(sb: &Sandbox) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 20_000); // 1.25 s
    let start = sb.join("face.png");
    write_face_png(&start, 320, 240);
    let end = sb.join("end.png");
    write_solid_png(&end, 320, 240, [200, 30, 30]);
    (audio, start, end)
}

fn empty_dir(sb: &Sandbox, name: &str) -> std::path::PathBuf {
    let d = sb.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run_job_with_path(sb: &Sandbox, path_env: &Path) -> std::path::PathBuf {
    let (audio, start, end) = inputs(sb);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start, "end_image": end,
            "buffer": { "pre_seconds": 0.5, "post_seconds": 0.5 },
            "determinism": { "fps": 25, "seed": 3 },
            "render": { "max_width": 320, "max_height": 240 },
            "comfyui": { "enable": false },
        }),
    );
    let wd = sb.join("wd");
    let out = sb
        .va()
        .env("PATH", path_env)
        .arg("run")
        .arg(&job)
        .arg("--workdir")
        .arg(&wd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "va run with PATH={} failed: {}",
        path_env.display(),
        stderr_of(&out)
    );
    let fin = wd.join("final.mp4");
    assert!(fin.is_file());
    // 1.25 + 0.5 + 0.5 s = 2.25 s at 25 fps = 56.25 → 56 frames (checked by the oracle, which
    // runs with the test's own PATH).
    assert_eq!(count_video_frames(&fin), 56);
    fin
}

#[test]
fn va_run_succeeds_with_an_empty_path() {
    let sb = Sandbox::new();
    let bin = empty_dir(&sb, "emptybin");
    run_job_with_path(&sb, &bin);
}

#[test]
fn va_produce_no_comfyui_succeeds_with_an_empty_path() {
    let sb = Sandbox::new();
    let bin = empty_dir(&sb, "emptybin");
    let (audio, start, _) = inputs(&sb);
    let wd = sb.join("produced");
    let out = sb
        .va()
        .env("PATH", &bin)
        .args([
            "produce",
            "--no-comfyui",
            "--max-width",
            "320",
            "--max-height",
            "240",
            "--audio",
        ])
        .arg(&audio)
        .arg("--start")
        .arg(&start)
        .arg("--workdir")
        .arg(&wd)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "va produce with an empty PATH failed: {}",
        stderr_of(&out)
    );
    let fin = wd.join("fertig.mp4");
    assert!(fin.is_file(), "produce writes fertig.mp4");
    assert!(
        wd.join("job.json").is_file(),
        "produce writes its job to the workdir"
    );
    // 1.25 s at the default 25 fps = 31.25 → 31 frames.
    assert_eq!(count_video_frames(&fin), 31);
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(m["run_status"], "completed");
}

/// Stronger than an empty PATH (where a failed spawn could be swallowed by a fallback): PATH
/// holds `ffmpeg` and `ffprobe` traps that record any call.
#[test]
fn va_run_never_spawns_ffmpeg_or_ffprobe() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let bin = empty_dir(&sb, "trapbin");
    let marker = sb.join("spawned.txt");
    for name in ["ffmpeg", "ffprobe", "sh", "python3"] {
        let p = bin.join(name);
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho \"$0 $*\" >> '{}'\nexit 1\n",
                marker.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    run_job_with_path(&sb, &bin);
    assert!(
        !marker.exists(),
        "va run started a subprocess: {}",
        std::fs::read_to_string(&marker).unwrap_or_default()
    );
}
