//! Issue 13, a hostile ComfyUI (`common/hostile.rs`, over the recorded one): every answer is
//! bounded before it is buffered or written, a frame that cannot be used degrades the run,
//! running out of disk ends the run with its code and no partial file, and nothing is ever
//! sent to another origin than `comfyui.url`.

#[path = "common/comfy_server.rs"]
mod comfy_server;
mod common;
#[path = "common/hostile.rs"]
mod hostile;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use comfy_server::{write_png, Config, Server};
use common::*;
use hostile::{Elsewhere, Hostile, TlsFront};
use serde_json::{json, Value};

/// A job for the inline start-image Wav2Lip workflow against `url`: 1 s of speech, a 64×48
/// start image; `comfyui` and `limits` merged in.
fn job(sb: &Sandbox, url: &str, comfyui: Value, limits: Value) -> PathBuf {
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("face.png");
    write_png(&start, 64, 48, [200, 150, 120]);
    let mut c = json!({"enable": true, "url": url, "poll_interval_ms": 50,
        "retry": {"attempts": 2, "backoff_ms": 50},
        "workflow_ids": ["vidax_wav2lip_image_audio"]});
    for (k, v) in comfyui.as_object().unwrap() {
        c[k] = v.clone();
    }
    sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start,
            "buffer": {"pre_seconds": 0.5, "post_seconds": 0.5},
            "determinism": {"fps": 25, "seed": 11},
            "comfyui": c, "lipsync": {"enable": true}, "limits": limits,
        }),
    )
}

/// `va run JOB --workdir WD` as a plain process, started through `sh` so a test can set
/// resource limits first (`prefix`, e.g. `ulimit -f 8192;`); the peak resident memory read
/// from `/proc/<pid>/status` (`VmHWM`) while it runs comes back with its output.
fn run(sb: &Sandbox, job: &Path, wd: &Path, prefix: &str) -> (Output, u64) {
    let child = Command::new("sh")
        .arg("-c")
        .arg(format!("{prefix} exec \"$0\" \"$@\""))
        .arg(assert_cmd::cargo::cargo_bin("va"))
        .arg("run")
        .arg(job)
        .arg("--workdir")
        .arg(wd)
        .env("VA_STATE_DIR", sb.state_root())
        .env_remove("VA_LOG")
        .env_remove("COMFYUI_INPUT_DIR")
        .env_remove("COMFYUI_DIR")
        .current_dir(sb.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = format!("/proc/{}/status", child.id());
    let watch = std::thread::spawn(move || {
        let (mut peak, started) = (0u64, Instant::now());
        while let Ok(text) = std::fs::read_to_string(&status) {
            let kb = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
            match kb {
                Some(kb) => peak = peak.max(kb * 1024),
                None => break, // a zombie: the process is done
            }
            if started.elapsed() > Duration::from_secs(180) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        peak
    });
    let out = child.wait_with_output().unwrap();
    (out, watch.join().unwrap())
}

fn manifest(wd: &Path) -> Value {
    read_json(&wd.join("manifest.json"))
}

/// Files under `dir` whose name ends with `.part` or `.partial`.
fn partials(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else if p.extension().is_some_and(|x| x == "part" || x == "partial") {
                found.push(p);
            }
        }
    }
    found
}

/// A completed run, degraded with `COMFYUI_BAD_RESPONSE`, whose warning contains `says`.
fn assert_degraded(out: &Output, wd: &Path, says: &str) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(out));
    let m = manifest(wd);
    assert_eq!(m["run_status"], "completed");
    let v = &m["video_source_detail"];
    assert_eq!(v["degraded"], true, "{v}");
    assert_eq!(v["degraded_reason"], "COMFYUI_BAD_RESPONSE", "{v}");
    let failure = m["comfyui"]["failure"]["message"].as_str().unwrap_or("");
    assert!(failure.contains(says), "{failure}");
    assert!(
        m["warnings"].to_string().contains(says),
        "{}",
        m["warnings"]
    );
    assert!(wd.join("final.mp4").is_file());
    assert_eq!(partials(wd), Vec::<PathBuf>::new());
    m
}

#[test]
fn a_2_gib_history_is_read_no_further_than_its_bound_and_the_run_degrades() {
    let sb = Sandbox::new();
    let srv = hostile::start(Config::default(), Hostile::HugeHistory(2 << 30));
    let wd = sb.join("run");
    let (out, peak) = run(&sb, &job(&sb, &srv.url, json!({}), json!({})), &wd, "");
    eprintln!(
        "va peak RSS (VmHWM) with a 2 GiB /history: {} MB",
        peak / 1_000_000
    );
    assert_degraded(&out, &wd, "limits.max_comfyui_json_bytes = 67108864");
    assert!(peak > 0, "VmHWM was read");
    assert!(peak < 200_000_000, "peak RSS {peak} bytes");
}

#[test]
fn an_endless_view_is_cut_at_its_bound_and_leaves_no_partial_file() {
    // The run's bound for ComfyUI files: frames × (8 × 64·48 + 1 MiB).
    let sb = Sandbox::new();
    let srv = hostile::start(Config::default(), Hostile::EndlessView);
    let wd = sb.join("run");
    let (out, _) = run(&sb, &job(&sb, &srv.url, json!({}), json!({})), &wd, "");
    assert_degraded(&out, &wd, "this run's bound for ComfyUI files");
    // The file's own bound, when it is the smaller.
    let wd = sb.join("run2");
    let limits = json!({"max_comfyui_file_bytes": 1_048_576});
    let (out, _) = run(&sb, &job(&sb, &srv.url, json!({}), limits), &wd, "");
    assert_degraded(&out, &wd, "limits.max_comfyui_file_bytes = 1048576");
}

#[test]
fn out_of_disk_while_fetching_ends_the_run_with_its_code_and_removes_the_partials() {
    // A file size limit of 4 MiB (`ulimit -f` counts 512-byte blocks; SIGXFSZ ignored, so a
    // write past it fails with EFBIG as one past a full disk fails with ENOSPC).
    let sb = Sandbox::new();
    let srv = hostile::start(Config::default(), Hostile::EndlessView);
    let wd = sb.join("run");
    let j = job(&sb, &srv.url, json!({}), json!({}));
    let (out, _) = run(&sb, &j, &wd, "trap '' XFSZ; ulimit -f 8192;");
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(70), "{err}");
    assert!(
        err.contains("error: INTERNAL:") && err.contains(".part"),
        "{err}"
    );
    let m = manifest(&wd);
    assert_eq!(m["run_status"], "failed");
    assert_eq!(m["exit_status"], 70);
    assert_eq!(m["error"]["code"], "INTERNAL");
    assert!(
        m["error"]["message"]
            .as_str()
            .unwrap()
            .contains("File too large"),
        "{}",
        m["error"]
    );
    assert_eq!(partials(&wd), Vec::<PathBuf>::new());
    // The workflow's frames are useless without the missing one: gone too.
    assert!(!wd.join("frames").exists());
}

#[test]
fn out_of_disk_while_encoding_ends_the_run_with_its_code_and_removes_the_partial() {
    // No ComfyUI: a noisy 320×240 start image zoomed for 2.5 s makes an MP4 of some MB; the
    // file size limit (1 MiB) stops it.
    let sb = Sandbox::new();
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("noise.png");
    let mut x = 0x9e37_79b9u32;
    image::RgbImage::from_fn(320, 240, |_, _| {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        image::Rgb([x as u8, (x >> 8) as u8, (x >> 16) as u8])
    })
    .save(&start)
    .unwrap();
    let j = sb.write_job(
        "job.json",
        &json!({"audio": audio, "start_image": start, "comfyui": {"enable": false},
            "buffer": {"pre_seconds": 0.5, "post_seconds": 1.0},
            "determinism": {"fps": 25, "seed": 1}, "encode": {"crf": 0}}),
    );
    let wd = sb.join("run");
    let (out, _) = run(&sb, &j, &wd, "trap '' XFSZ; ulimit -f 2048;");
    let err = stderr_of(&out);
    let m = manifest(&wd);
    assert_eq!(m["run_status"], "failed", "{err}");
    let code = m["error"]["code"].as_str().unwrap().to_string();
    assert_eq!(
        out.status.code(),
        m["exit_status"].as_i64().map(|c| c as i32),
        "{err}"
    );
    assert!(err.contains(&format!("error: {code}:")), "{err}");
    assert!(
        m["error"]["message"].to_string().contains("File too large"),
        "{m}"
    );
    assert_eq!(partials(&wd), Vec::<PathBuf>::new());
    assert!(!wd.join("final.mp4").exists());
}

#[test]
fn a_20000_square_frame_degrades_from_its_header() {
    let sb = Sandbox::new();
    let png = hostile::big_png(20_000, 20_000);
    let info = image::ImageReader::new(std::io::Cursor::new(&png[..]))
        .with_guessed_format()
        .unwrap()
        .into_dimensions()
        .unwrap();
    assert_eq!(info, (20_000, 20_000), "a real PNG of {} bytes", png.len());
    let srv = hostile::start(Config::default(), Hostile::BigFrame(20_000, 20_000));
    let wd = sb.join("run");
    let (out, _) = run(&sb, &job(&sb, &srv.url, json!({}), json!({})), &wd, "");
    assert_degraded(
        &out,
        &wd,
        "20000x20000 = 400000000 pixels, outside 1 to limits.max_image_pixels = 64000000",
    );
}

#[test]
fn a_frame_that_does_not_decode_degrades_to_the_fallback() {
    // Its header is fine (the fetch takes it); its pixel data is not (the encode finds out).
    let sb = Sandbox::new();
    let srv = hostile::start(Config::default(), Hostile::CorruptFrame(3));
    let wd = sb.join("run");
    let (out, _) = run(&sb, &job(&sb, &srv.url, json!({}), json!({})), &wd, "");
    let m = assert_degraded(&out, &wd, "ComfyUI frame");
    assert_eq!(m["video_source_detail"]["comfyui_output"], Value::Null);
    assert_eq!(m["video_source_detail"]["lipsync"], "off");
    assert_eq!(m["motion_meta"]["source"], "local");
    let frames = decode_rgb(&wd.join("final.mp4"), 64, 48);
    let (index, tag) = comfy_server::read_frame(&frames[0], 64, 48);
    assert!(
        max_diff(tag, comfy_server::Tag::Wav2Lip.colour()) > 40,
        "frame 0 is still ComfyUI's ({index}, {tag:?})"
    );
}

#[test]
fn redirects_to_another_origin_are_refused_and_nothing_reaches_it() {
    let elsewhere = Elsewhere::start();
    let cases: [(&str, (&str, &str)); 5] = [
        ("uploads", ("POST", "/upload/image")),
        ("graphs", ("POST", "/prompt")),
        ("history", ("GET", "/history/")),
        ("frames", ("GET", "/view")),
        ("health", ("GET", "/system_stats")),
    ];
    for (what, route) in cases {
        let sb = Sandbox::new();
        let srv = hostile::start(
            Config::default(),
            Hostile::Redirect {
                routes: vec![route],
                to: elsewhere.url.clone(),
            },
        );
        let wd = sb.join("run");
        let (out, _) = run(&sb, &job(&sb, &srv.url, json!({}), json!({})), &wd, "");
        assert_eq!(
            elsewhere.hits(),
            0,
            "{what}: a request reached the other origin"
        );
        if what == "health" {
            assert_eq!(out.status.code(), Some(30), "{what}: {}", stderr_of(&out));
            assert!(
                stderr_of(&out).contains("another origin"),
                "{}",
                stderr_of(&out)
            );
        } else {
            assert_degraded(&out, &wd, "another origin than comfyui.url");
        }
    }
    // Within the origin, a redirect is followed (`/view` → `/api/view`, a relative location).
    let sb = Sandbox::new();
    let srv = hostile::start(
        Config::default(),
        Hostile::Redirect {
            routes: vec![("GET", "/view")],
            to: "/api".into(),
        },
    );
    let wd = sb.join("run");
    let (out, _) = run(&sb, &job(&sb, &srv.url, json!({}), json!({})), &wd, "");
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    assert_eq!(m["video_source_detail"]["degraded"], false, "{m}");
    assert_eq!(elsewhere.hits(), 0);
}

#[test]
fn https_and_wss_endpoints_work_within_the_same_bounds() {
    let sb = Sandbox::new();
    let srv = Server::start(Config::default());
    let front = TlsFront::start(&srv.url, sb.path());
    let wd = sb.join("run");
    let j = job(&sb, &front.url, json!({}), json!({}));
    let trust = format!("SSL_CERT_FILE='{}'", front.cert_pem.display());
    let (out, _) = run(&sb, &j, &wd, &format!("export {trust};"));
    assert!(out.status.success(), "{}", stderr_of(&out));
    let m = manifest(&wd);
    assert_eq!(m["video_source_detail"]["degraded"], false, "{m}");
    assert_eq!(m["comfyui"]["url"], front.url.as_str());
    // The graph went out after the wss:// socket was open.
    assert!(srv.posts() >= 1);
    assert_eq!(
        srv.state
            .posts_without_socket
            .load(std::sync::atomic::Ordering::SeqCst),
        0
    );
    // The bounds hold over TLS: /object_info (505,830 bytes and more) over a 64 KiB bound.
    let wd = sb.join("run2");
    let j = job(
        &sb,
        &front.url,
        json!({}),
        json!({"max_comfyui_json_bytes": 65536}),
    );
    let (out, _) = run(&sb, &j, &wd, &format!("export {trust};"));
    assert_degraded(&out, &wd, "limits.max_comfyui_json_bytes = 65536");
}
