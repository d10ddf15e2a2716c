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
    // (1.5 + 0.25 + 0.5) s · 30000/1001 = 67.43 → 67 frames.
    assert_eq!(count_video_frames(&a), 67);
    assert_same_bytes(&a, &b);
}

/// Panics with where two finals first differ.
fn assert_same_bytes(a: &std::path::Path, b: &std::path::Path) {
    let (ba, bb) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    assert!(
        ba.len() > 1000,
        "final is suspiciously small ({} bytes)",
        ba.len()
    );
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

/// A 24 s job (long enough that audio and video packets interleave over many seconds and the
/// encoders run at their own pace): still image, then a start video (the still job's final,
/// looped) — each rendered twice, byte for byte the same.
#[test]
fn long_jobs_from_a_still_image_and_a_start_video_are_byte_identical() {
    let sb = Sandbox::new();
    let audio = sb.join("voice.wav");
    write_wav(&audio, 48_000, 2, 48_000 * 22); // 22 s
    let start = sb.join("face.png");
    write_face_png(&start, 320, 240);
    let end = sb.join("end.png");
    write_solid_png(&end, 320, 240, [30, 30, 220]);
    let still = sb.write_job(
        "still.json",
        &json!({
            "audio": audio, "start_image": start, "end_image": end,
            "buffer": { "pre_seconds": 0.5, "post_seconds": 1.5 },
            "determinism": { "fps": "25", "seed": 42, "seed_policy": "fixed" },
            "render": { "width": 320, "height": 240 },
            "motion": { "mode": "zoom_in", "strength": 0.2 },
            "comfyui": { "enable": false },
        }),
    );
    let (a, _) = sb.run_ok(&still, &sb.join("s1"));
    let (b, _) = sb.run_ok(&still, &sb.join("s2"));
    assert_eq!(count_video_frames(&a), 600); // 24 s at 25 fps
    assert_same_bytes(&a, &b);

    // A short clip of the still job's final (the first 6 s), looped over the same 24 s.
    let clip = sb.join("clip.json");
    let short = sb.join("short.wav");
    write_wav(&short, 48_000, 2, 48_000 * 6);
    std::fs::write(
        &clip,
        serde_json::to_vec(&json!({
            "audio": short, "start_image": start,
            "determinism": { "fps": "30", "seed": 1, "seed_policy": "fixed" },
            "render": { "width": 320, "height": 240 },
            "motion": { "mode": "zoom_in", "strength": 0.3 },
            "comfyui": { "enable": false },
        }))
        .unwrap(),
    )
    .unwrap();
    let (clip_mp4, _) = sb.run_ok(&clip, &sb.join("c"));
    let video = sb.write_job(
        "video.json",
        &json!({
            "audio": audio, "start_video": clip_mp4, "end_image": end,
            "buffer": { "pre_seconds": 0.5, "post_seconds": 1.5 },
            "determinism": { "fps": "25", "seed": 42, "seed_policy": "fixed" },
            "render": { "width": 320, "height": 240 },
            "video": { "extend": "loop" },
            "comfyui": { "enable": false },
        }),
    );
    let (c, _) = sb.run_ok(&video, &sb.join("v1"));
    let (d, _) = sb.run_ok(&video, &sb.join("v2"));
    assert_eq!(count_video_frames(&c), 600);
    assert_same_bytes(&c, &d);
}

/// A frames folder (ComfyUI's output: 562 PNGs, decoded and rendered by the worker pool) over
/// a 24 s job, rendered twice: the same bytes.
#[test]
fn long_job_from_a_frames_folder_is_byte_identical() {
    frames_folder_twice(false);
}

/// The same with the frames as the still lip-sync returns them (`VIDAX_SavePatches`): patches
/// laid over the start picture and zoomed, each worker updating its renderer around the box.
#[test]
fn long_job_from_the_lip_synced_still_as_patches_is_byte_identical() {
    frames_folder_twice(true);
}

fn frames_folder_twice(patches: bool) {
    use vidax::media::encode::{encode_mp4, AudioSettings, VideoSettings};
    use vidax::stages::comfyui::{FrameZoom, Visual};
    use vidax::stages::compose::Compositor;

    let sb = Sandbox::new();
    let audio = sb.join("voice.wav");
    write_wav(&audio, 48_000, 2, 48_000 * 22);
    let start = sb.join("face.png");
    write_face_png(&start, 320, 240);
    let end = sb.join("end.png");
    write_solid_png(&end, 320, 240, [30, 30, 220]);
    let frames = sb.join("frames");
    std::fs::create_dir_all(&frames).unwrap();
    let count = 562u64; // 600 frames less the end image's hold (1.5 s: 38 frames)
    for k in 0..count {
        let path = frames.join(format!("{:06}.png", k + 1));
        if patches {
            // A mouth-like box that moves and changes over the start picture.
            let (x, y) = (100 + (k as u32 * 7) % 90, 150 + (k as u32 * 3) % 40);
            let patch = image::RgbImage::from_fn(37, 15, |i, j| {
                image::Rgb([(i * 6 + k as u32) as u8, (j * 15) as u8, 60])
            });
            let mut png = std::io::Cursor::new(Vec::new());
            patch.write_to(&mut png, image::ImageFormat::Png).unwrap();
            let bytes = vidax::media::pngread::with_offset(&png.into_inner(), x as i32, y as i32);
            std::fs::write(&path, bytes).unwrap();
            continue;
        }
        // Each frame different (a bar that moves), so that a frame out of order would show.
        let img = image::RgbImage::from_fn(320, 240, |x, y| {
            let bar = (x + 320 - (k as u32 * 3) % 320) % 320 < 12;
            image::Rgb(if bar {
                [240, 240, 240]
            } else {
                [(x % 256) as u8, (y % 256) as u8, (k % 200) as u8]
            })
        });
        img.save(&path).unwrap();
    }

    let job_path = sb.write_job(
        "job.json",
        &json!({
            "audio": audio, "start_image": start, "end_image": end,
            "buffer": { "pre_seconds": 0.5, "post_seconds": 1.5 },
            "determinism": { "fps": "25", "seed": 42, "seed_policy": "fixed" },
            "render": { "width": 320, "height": 240 },
            "comfyui": { "enable": false },
        }),
    );
    let job = vidax::job::load(&job_path).unwrap();
    let admitted = vidax::stages::admit(job.clone(), &sb.state_root(), Vec::new()).unwrap();
    let render = |name: &str| {
        let wd = sb.join(name);
        std::fs::create_dir_all(&wd).unwrap();
        let mut m = vidax::record::Manifest::new("test");
        let p = vidax::stages::prepare::prepare(&admitted, &wd, &mut m).unwrap();
        assert_eq!(p.frames.main_frames(), count);
        let visual = Visual::Frames {
            dir: frames.clone(),
            count,
            zoom: patches.then_some(FrameZoom { centre: None }),
            base: patches.then(|| start.clone()),
        };
        let comp = Compositor::for_run(&job, &p, Some(&visual), None).unwrap();
        let fps = p.frames.fps;
        let video = VideoSettings {
            width: p.render.0,
            height: p.render.1,
            fps_num: fps.num() as u32,
            fps_den: fps.den() as u32,
            frames: p.frames.target_frames,
            preset: "veryfast".into(),
            crf: 20,
            threads: 0,
        };
        let audio = AudioSettings {
            wav: p.wav.clone(),
            bitrate: 192_000,
        };
        let out = wd.join("final.mp4");
        encode_mp4(
            &out,
            &video,
            Box::new(comp),
            &audio,
            &vidax::progress::Silent,
        )
        .unwrap();
        out
    };
    let (a, b) = (render("f1"), render("f2"));
    assert_eq!(count_video_frames(&a), 600);
    assert_same_bytes(&a, &b);
}
