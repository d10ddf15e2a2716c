//! The same job rendered twice gives byte-identical finals.

mod common;

use common::*;
use serde_json::json;

#[test]
fn same_job_twice_gives_byte_identical_finals() {
    let sb = Sandbox::new();
    let audio = sb.join("voice.wav");
    write_wav(&audio, 48_000, 2, 72_000); // 1.5 s
    let start = sb.join("face.png");
    write_face_png(&start, 320, 240);
    let end = sb.join("end.png");
    write_solid_png(&end, 320, 240, [30, 30, 220]);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start, "end_image": end,
            "buffer": { "pre_seconds": 0.25, "post_seconds": 0.5 },
            "determinism": { "fps": "30000/1001", "seed": 42, "seed_policy": "fixed" },
            "render": { "max_width": 320, "max_height": 240 },
            "motion": { "mode": "zoom_in", "strength": 0.2 },
            "comfyui": { "enable": false },
        }),
    );
    let (a, ma) = sb.run_ok(&job, &sb.join("wd1"));
    let (b, mb) = sb.run_ok(&job, &sb.join("wd2"));
    assert_ne!(ma["run_id"], mb["run_id"], "two runs, two run ids");
    let (ba, bb) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert!(
        ba.len() > 1000,
        "final is suspiciously small ({} bytes)",
        ba.len()
    );
    // (1.5 + 0.25 + 0.5) s · 30000/1001 = 67.43 → 67 frames.
    assert_eq!(count_video_frames(&a), 67);
    if ba != bb {
        let first = ba
            .iter()
            .zip(&bb)
            .position(|(x, y)| x != y)
            .unwrap_or(ba.len().min(bb.len()));
        panic!(
            "finals differ: {} bytes vs {} bytes, first difference at byte {first}",
            ba.len(),
            bb.len()
        );
    }
}
