//! Render size (SPEC §4): odd source sizes become even output sizes that keep the aspect, and an
//! explicit width/height with another aspect pillarboxes the picture instead of squashing it.

mod common;

use common::*;
use serde_json::json;

#[test]
fn odd_1023x767_image_renders_at_even_640x480_keeping_aspect() {
    let sb = Sandbox::new();
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("odd.png");
    write_face_png(&start, 1023, 767);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start,
            "determinism": { "fps": 25, "seed": 1 },
            "render": { "max_width": 854, "max_height": 480 },
            "comfyui": { "enable": false },
        }),
    );
    let (final_path, manifest) = sb.run_ok(&job, &sb.join("wd"));

    let v = stream(&final_path, "video");
    let (w, h) = (v["width"].as_u64().unwrap(), v["height"].as_u64().unwrap());
    assert_eq!((w, h), (640, 480), "1023x767 inside 854x480");
    assert!(w % 2 == 0 && h % 2 == 0, "{w}x{h} must be even");
    let aspect_err = (w as f64 / h as f64 - 1023.0 / 767.0).abs();
    assert!(
        aspect_err < 0.01,
        "aspect {w}x{h} vs 1023x767: error {aspect_err}"
    );
    assert_eq!(manifest["render"]["width"], 640);
    assert_eq!(manifest["render"]["height"], 480);
    assert_eq!(manifest["render"]["source_width"], 1023);
    assert_eq!(manifest["render"]["source_height"], 767);
    // 1 s at 25 fps.
    assert_eq!(count_video_frames(&final_path), 25);
}

#[test]
fn square_image_in_explicit_640x360_is_a_centred_square_with_side_bars() {
    const CONTENT: [u8; 3] = [220, 200, 40];
    let sb = Sandbox::new();
    let audio = sb.join("voice.wav");
    write_wav(&audio, 16_000, 1, 16_000);
    let start = sb.join("square.png");
    write_solid_png(&start, 300, 300, CONTENT);
    let job = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start,
            "determinism": { "fps": 25, "seed": 1 },
            "render": { "width": 640, "height": 360 },
            "motion": { "mode": "none" },
            "background": "#000000",
            "comfyui": { "enable": false },
        }),
    );
    let (final_path, _) = sb.run_ok(&job, &sb.join("wd"));
    let (w, h, buf) = decode_first_frame(&final_path);
    assert_eq!((w, h), (640, 360));

    let is_content = |p: [u8; 3]| max_diff(p, CONTENT) <= 30;
    let is_background = |p: [u8; 3]| p.iter().all(|&c| c <= 20);

    // Content extent along the middle row and the middle column.
    let row: Vec<u32> = (0..w)
        .filter(|&x| is_content(px(&buf, w, x, h / 2)))
        .collect();
    let col: Vec<u32> = (0..h)
        .filter(|&y| is_content(px(&buf, w, w / 2, y)))
        .collect();
    assert!(
        !row.is_empty() && !col.is_empty(),
        "no content found in the middle of frame 0"
    );
    let (left, right) = (row[0], *row.last().unwrap() + 1);
    let (top, bottom) = (col[0], *col.last().unwrap() + 1);
    let (cw, ch) = (right - left, bottom - top);
    assert_eq!(
        row.len() as u32,
        cw,
        "content row is not contiguous ({left}..{right})"
    );
    assert!(cw.abs_diff(ch) <= 4, "content is {cw}x{ch}, not square");
    assert!(
        ch >= 356,
        "square content should fill the height, got {ch} rows ({top}..{bottom})"
    );
    assert!(
        left.abs_diff(w - right) <= 2,
        "content not centred: left bar {left}, right bar {}",
        w - right
    );

    // The side bars are background, top to bottom.
    let bar = (w - cw) / 2;
    assert!(bar >= 130, "side bars {bar} px, expected about 140");
    for y in (0..h).step_by(4) {
        for x in (0..bar - 4).chain(w - bar + 4..w) {
            let p = px(&buf, w, x, y);
            assert!(
                is_background(p),
                "bar pixel ({x},{y}) is {p:?}, not the background"
            );
        }
    }
}
