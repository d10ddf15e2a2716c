//! Issue 3, images: PNG (8/16-bit, palette, grey, alpha over black or the job's background),
//! JPEG (EXIF orientation, CMYK, progressive), WebP, BMP, TIFF, 1×1, and the pixel limit.
//! Formats the `image` crate writes are made here; the others are tiny files in
//! `fixtures/images/` (made by `make_images.py` there). Every picture shows, upright, the same
//! quadrants: top-left red, top-right green, bottom-left blue, bottom-right white.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use image::{ImageBuffer, Luma, Rgb, Rgba};
use serde_json::json;

const W: u32 = 32;
const H: u32 = 16;
const RED: [u8; 3] = [255, 0, 0];
const GREEN: [u8; 3] = [0, 255, 0];
const BLUE: [u8; 3] = [0, 0, 255];
const WHITE: [u8; 3] = [255, 255, 255];
const QUADS: [[u8; 3]; 4] = [RED, GREEN, BLUE, WHITE];

/// Quadrant index (0 TL, 1 TR, 2 BL, 3 BR) of pixel (x, y) in a `w`×`h` picture.
fn quad(x: u32, y: u32, w: u32, h: u32) -> usize {
    usize::from(x >= w / 2) + 2 * usize::from(y >= h / 2)
}

fn fixture(name: &str) -> PathBuf {
    root().join("fixtures/images").join(name)
}

/// Renders `img` (one short job, no motion zoom at frame 0) and returns frame 0 of the final.
fn render(sb: &Sandbox, img: &Path, background: Option<&str>) -> (u32, u32, Vec<u8>) {
    let audio = sb.join("a.wav");
    write_wav(&audio, 16_000, 1, 3_200);
    let mut job = json!({
        "audio": audio, "start_image": img,
        "determinism": { "fps": 25, "seed": 1 },
        "render": { "max_width": 320, "max_height": 320 },
        "comfyui": { "enable": false },
    });
    if let Some(bg) = background {
        job["background"] = json!(bg);
    }
    let name = img.file_name().unwrap().to_string_lossy().to_string();
    let job = sb.write_job(&format!("{name}.json"), &job);
    let (final_mp4, manifest) = sb.run_ok(&job, &sb.join(&format!("w-{name}")));
    assert_eq!(manifest["run_status"], "completed", "{name}");
    decode_first_frame(&final_mp4)
}

/// Frame 0 of `img` is upright at aspect 2:1 and shows `want[q]` at the centre of quadrant q.
fn assert_quadrants(img: &Path, background: Option<&str>, want: [[u8; 3]; 4], tol: u8) {
    let sb = Sandbox::new();
    let (w, h, rgb) = render(&sb, img, background);
    let name = img.display();
    assert_eq!(
        w,
        2 * h,
        "{name}: rendered {w}x{h}, the picture is 2:1 upright"
    );
    for (q, want) in want.iter().enumerate() {
        let x = w / 4 + (q as u32 % 2) * w / 2;
        let y = h / 4 + (q as u32 / 2) * h / 2;
        let got = px(&rgb, w, x, y);
        assert!(
            max_diff(got, *want) <= tol,
            "{name}: quadrant {q} at ({x},{y}) is {got:?}, want {want:?}"
        );
    }
}

/// The picture's pixel format by ffprobe (the oracle): proves a fixture is what it claims.
fn pix_fmt(p: &Path) -> String {
    ffprobe_json(p, &["-show_entries", "stream=pix_fmt"])["streams"][0]["pix_fmt"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// The offset of the first JPEG start-of-frame marker (SOF0/SOF1/SOF2) in `bytes`.
fn sof(bytes: &[u8]) -> Option<usize> {
    bytes
        .windows(2)
        .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0..=0xC2))
}

/// The component count in a JPEG's start-of-frame header (3: Y'CbCr, 4: CMYK).
fn jpeg_components(p: &Path) -> u8 {
    let b = std::fs::read(p).unwrap();
    let at = sof(&b).expect("a SOF marker");
    // FF Cx, length (2), precision (1), height (2), width (2), components (1).
    b[at + 9]
}

fn has_marker(p: &Path, marker: u8) -> bool {
    let b = std::fs::read(p).unwrap();
    sof(&b).is_some_and(|at| b[at + 1] == marker)
}

fn rgb8() -> ImageBuffer<Rgb<u8>, Vec<u8>> {
    ImageBuffer::from_fn(W, H, |x, y| Rgb(QUADS[quad(x, y, W, H)]))
}

#[test]
fn png_8_and_16_bit_rgb() {
    let sb = Sandbox::new();
    let p8 = sb.join("rgb8.png");
    rgb8().save(&p8).unwrap();
    assert_quadrants(&p8, None, QUADS, 12);
    let p16 = sb.join("rgb16.png");
    let img: ImageBuffer<Rgb<u16>, Vec<u16>> = ImageBuffer::from_fn(W, H, |x, y| {
        let c = QUADS[quad(x, y, W, H)];
        Rgb(c.map(|v| u16::from(v) * 257))
    });
    img.save(&p16).unwrap();
    assert_eq!(pix_fmt(&p16), "rgb48be");
    assert_quadrants(&p16, None, QUADS, 12);
}

#[test]
fn png_grey_8_and_16_bit_and_palette() {
    let sb = Sandbox::new();
    let levels = [0u8, 85, 170, 255];
    let want = levels.map(|l| [l; 3]);
    let g8 = sb.join("grey8.png");
    ImageBuffer::<Luma<u8>, _>::from_fn(W, H, |x, y| Luma([levels[quad(x, y, W, H)]]))
        .save(&g8)
        .unwrap();
    assert_quadrants(&g8, None, want, 6);
    let g16 = sb.join("grey16.png");
    ImageBuffer::<Luma<u16>, _>::from_fn(W, H, |x, y| {
        Luma([u16::from(levels[quad(x, y, W, H)]) * 257])
    })
    .save(&g16)
    .unwrap();
    assert_eq!(pix_fmt(&g16), "gray16be");
    assert_quadrants(&g16, None, want, 6);
    assert_eq!(pix_fmt(&fixture("palette.png")), "pal8");
    assert_quadrants(&fixture("palette.png"), None, QUADS, 12);
}

#[test]
fn png_alpha_is_composited_over_black_or_the_job_background() {
    // Top-left fully transparent red, top-right half-transparent green.
    let sb = Sandbox::new();
    let p = sb.join("alpha.png");
    ImageBuffer::<Rgba<u8>, _>::from_fn(W, H, |x, y| {
        let q = quad(x, y, W, H);
        let [r, g, b] = QUADS[q];
        let a = match q {
            0 => 0,
            1 => 128,
            _ => 255,
        };
        Rgba([r, g, b, a])
    })
    .save(&p)
    .unwrap();
    assert_quadrants(&p, None, [[0, 0, 0], [0, 128, 0], BLUE, WHITE], 12);
    assert_quadrants(
        &p,
        Some("#FFFF00"),
        [[255, 255, 0], [127, 255, 0], BLUE, WHITE],
        12,
    );
}

#[test]
fn jpeg_baseline_progressive_and_cmyk() {
    let sb = Sandbox::new();
    let p = sb.join("baseline.jpg");
    rgb8().save(&p).unwrap();
    assert_quadrants(&p, None, QUADS, 24);
    assert_quadrants(&fixture("progressive.jpg"), None, QUADS, 24);
    assert_eq!(
        jpeg_components(&fixture("cmyk.jpg")),
        4,
        "CMYK has 4 components"
    );
    assert_eq!(jpeg_components(&fixture("progressive.jpg")), 3);
    assert!(
        has_marker(&fixture("progressive.jpg"), 0xC2),
        "progressive SOF2"
    );
    assert_quadrants(&fixture("cmyk.jpg"), None, QUADS, 24);
}

#[test]
fn jpeg_exif_orientation_is_applied() {
    // Orientations 6 and 8 store the picture 16x32 (portrait): it must render 2:1 upright.
    for o in [2, 3, 6, 8] {
        assert_quadrants(
            &fixture(&format!("exif_orientation_{o}.jpg")),
            None,
            QUADS,
            24,
        );
    }
}

#[test]
fn webp_bmp_and_tiff() {
    let sb = Sandbox::new();
    for ext in ["webp", "bmp", "tiff"] {
        let p = sb.join(&format!("q.{ext}"));
        rgb8().save(&p).unwrap();
        assert_quadrants(&p, None, QUADS, 12);
    }
    assert_quadrants(&fixture("lossy.webp"), None, QUADS, 40);
}

#[test]
fn one_pixel_image_renders_every_frame() {
    let sb = Sandbox::new();
    let p = sb.join("dot.png");
    ImageBuffer::<Rgb<u8>, _>::from_pixel(1, 1, Rgb([200, 40, 90]))
        .save(&p)
        .unwrap();
    let (w, h, rgb) = render(&sb, &p, None);
    assert!(w >= 2 && h >= 2 && w % 2 == 0 && h % 2 == 0, "{w}x{h}");
    let mid = px(&rgb, w, w / 2, h / 2);
    assert!(max_diff(mid, [200, 40, 90]) <= 12, "{w}x{h}: {mid:?}");
    let final_mp4 = sb.join("w-dot.png/final.mp4");
    assert_eq!(count_video_frames(&final_mp4), 5, "0.2 s at 25 fps");
}

#[test]
fn the_pixel_limit_is_configurable_and_refuses_from_the_header() {
    let sb = Sandbox::new();
    let p = sb.join("q.png");
    rgb8().save(&p).unwrap();
    let audio = sb.join("a.wav");
    write_wav(&audio, 16_000, 1, 3_200);
    let job = |limit: u64| {
        json!({
            "audio": audio, "start_image": p,
            "determinism": { "fps": 25, "seed": 1 },
            "limits": { "max_image_pixels": limit },
            "comfyui": { "enable": false },
        })
    };
    let over = sb.write_job("over.json", &job(u64::from(W * H) - 1));
    let out = sb
        .va()
        .arg("run")
        .arg(&over)
        .arg("--workdir")
        .arg(sb.join("over"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(20), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("UNSUPPORTED_FORMAT") && err.contains("q.png"),
        "{err}"
    );
    assert!(!sb.join("over/final.mp4").exists());
    let at = sb.write_job("at.json", &job(u64::from(W * H)));
    sb.run_ok(&at, &sb.join("at"));
}

// ---- issue 15: inputs at the edges ------------------------------------------------------------

/// `va run` of a short job on `img`; the command's output.
fn try_run(sb: &Sandbox, img: &Path, extra: serde_json::Value) -> std::process::Output {
    let audio = sb.join("a.wav");
    write_wav(&audio, 16_000, 1, 3_200);
    let mut job = json!({
        "audio": audio, "start_image": img,
        "determinism": { "fps": 25, "seed": 1 },
        "comfyui": { "enable": false },
    });
    for (k, v) in extra.as_object().unwrap() {
        job[k] = v.clone();
    }
    let name = img.file_name().unwrap().to_string_lossy().to_string();
    let job = sb.write_job(&format!("{name}.json"), &job);
    sb.va()
        .arg("run")
        .arg(&job)
        .arg("--workdir")
        .arg(sb.join(&format!("w-{name}")))
        .output()
        .unwrap()
}

#[test]
fn a_truncated_jpeg_is_refused_naming_the_file_never_drawn_grey() {
    let sb = Sandbox::new();
    let img = ImageBuffer::from_fn(400, 300, |x, y| Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let full = sb.join("full.jpg");
    img.save(&full).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    assert!(bytes.len() > 6_000, "{}", bytes.len());
    let cut = sb.join("cut.jpg");
    std::fs::write(&cut, &bytes[..3_000]).unwrap();
    // The header still reads: the size is known, only the picture data is missing.
    assert!(vidax::media::picture::image_dimensions(&cut).is_ok());
    let out = try_run(&sb, &cut, json!({}));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(20), "{err}");
    assert!(
        err.contains("UNSUPPORTED_FORMAT") && err.contains("cut.jpg"),
        "{err}"
    );
    assert!(!sb.join("w-cut.jpg").exists(), "refused before the workdir");
    // And as the end image, the same.
    let out = try_run(
        &sb,
        &full,
        json!({"end_image": cut, "buffer": {"post_seconds": 0.2}}),
    );
    assert_eq!(out.status.code(), Some(20), "{}", stderr_of(&out));
    // The intact one renders.
    let out = try_run(&sb, &full, json!({}));
    assert!(out.status.success(), "{}", stderr_of(&out));
}

#[test]
fn a_truncated_png_is_refused_too() {
    let sb = Sandbox::new();
    let img = ImageBuffer::from_fn(300, 200, |x, y| {
        Rgb([(x * 7 % 256) as u8, (y * 3 % 256) as u8, 9])
    });
    let full = sb.join("full.png");
    img.save(&full).unwrap();
    let bytes = std::fs::read(&full).unwrap();
    let cut = sb.join("cut.png");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let out = try_run(&sb, &cut, json!({}));
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(20), "{err}");
    assert!(err.contains("cut.png"), "{err}");
}

#[test]
fn a_ycbcr_tiff_as_ffmpeg_writes_it_is_an_image() {
    let sb = Sandbox::new();
    let src = sb.join("q.png");
    image::RgbImage::from_fn(W * 4, H * 4, |x, y| Rgb(QUADS[quad(x, y, W * 4, H * 4)]))
        .save(&src)
        .unwrap();
    let tiff = sb.join("frame.tiff");
    let made = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&src)
        .args(["-pix_fmt", "yuv420p"])
        .arg(&tiff)
        .status()
        .unwrap();
    assert!(made.success());
    assert_eq!(pix_fmt(&tiff), "yuv420p", "the fixture is a YCbCr TIFF");
    // Through va run: an image, rendered with its quadrants.
    assert_quadrants(&tiff, None, QUADS, 40);
    // Through va produce: probed as an image (lip-sync defaults on for a start image; with
    // --no-comfyui it is off, the motion renderer draws it).
    let audio = sb.join("a.wav");
    write_wav(&audio, 16_000, 1, 3_200);
    let out = sb
        .va()
        .args(["produce", "--no-comfyui", "--audio"])
        .arg(&audio)
        .arg("--start")
        .arg(&tiff)
        .arg("--workdir")
        .arg(sb.join("p"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let job = read_json(&sb.join("p/job.json"));
    assert!(job["start_image"].is_string(), "{job}");
    assert!(job["start_video"].is_null(), "{job}");
}

#[test]
fn a_picture_thinner_than_two_pixels_fills_the_frame() {
    let sb = Sandbox::new();
    for (name, w, h) in [("tall.png", 1u32, 1001u32), ("wide.png", 1001, 1)] {
        let p = sb.join(name);
        write_solid_png(&p, w, h, [255, 255, 255]);
        let audio = sb.join("a.wav");
        write_wav(&audio, 16_000, 1, 3_200);
        let job = sb.write_job(
            &format!("{name}.json"),
            &json!({"audio": audio, "start_image": p, "determinism": {"seed": 1},
                    "comfyui": {"enable": false}, "motion": {"mode": "none"}}),
        );
        let (fin, m) = sb.run_ok(&job, &sb.join(&format!("w-{name}")));
        let (fw, fh, rgb) = decode_first_frame(&fin);
        assert_eq!(
            (
                m["render"]["width"].as_u64(),
                m["render"]["height"].as_u64()
            ),
            (Some(u64::from(fw)), Some(u64::from(fh)))
        );
        assert!(fw == 2 || fh == 2, "{name}: {fw}x{fh}");
        let mean = rgb.iter().map(|&v| f64::from(v)).sum::<f64>() / rgb.len() as f64;
        assert!(
            mean > 235.0,
            "{name}: mean grey {mean:.1} for a white picture"
        );
    }
}

#[test]
fn an_fps_whose_exact_timescale_cannot_be_written_is_refused_at_validation() {
    let sb = Sandbox::new();
    let img = sb.join("f.png");
    write_face_png(&img, 64, 48);
    let out = try_run(
        &sb,
        &img,
        json!({"determinism": {"fps": "23.9761", "seed": 1}}),
    );
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(
        err.contains("determinism.fps") && err.contains("timescale"),
        "{err}"
    );
    // With the input's own 22.05 kHz ("source"), the same, found when the audio is opened.
    let audio = sb.join("a22.wav");
    write_wav(&audio, 22_050, 1, 22_050);
    let job = sb.write_job(
        "src.json",
        &json!({"audio": audio, "start_image": img,
                "determinism": {"fps": "23.9761", "seed": 1},
                "comfyui": {"enable": false}, "encode": {"audio_rate": "source"}}),
    );
    let out = sb
        .va()
        .arg("run")
        .arg(&job)
        .arg("--workdir")
        .arg(sb.join("w2"))
        .output()
        .unwrap();
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(10), "{err}");
    assert!(
        err.contains("22050 Hz") && err.contains("timescale"),
        "{err}"
    );
    assert!(!sb.join("w2").exists(), "refused before the workdir");
    // 23.976 (the NTSC rate) renders.
    let out = try_run(
        &sb,
        &img,
        json!({"determinism": {"fps": "23.976", "seed": 1}}),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
}
