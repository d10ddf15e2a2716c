//! Shared helpers for the integration tests: generated inputs, the `va` command with its own
//! state dir, and ffprobe/ffmpeg as an independent oracle (tests only; the engine never runs
//! them).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::Value;

/// The crate root (where `fixtures/` lives).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `fixtures/media/tone_44k1_stereo.mp3`: 2.3 s of a 220 Hz sine, 44.1 kHz stereo, 96 kb/s.
pub fn mp3_fixture() -> PathBuf {
    root().join("fixtures/media/tone_44k1_stereo.mp3")
}

/// Its decoded programme in samples per channel (encoder delay and padding trimmed through the
/// LAME gapless header). Cross-checked when the file was made: 2.3 s · 44100 = 101430, and
/// `ffmpeg -i tone_44k1_stereo.mp3 -f s16le -` yields 405720 bytes = 101430 · 2 ch · 2 bytes.
pub const MP3_SAMPLES: u64 = 101_430;
pub const MP3_RATE: u32 = 44_100;

/// A test sandbox: its own temp dir and its own `VA_STATE_DIR`.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("va-it-")
                .tempdir()
                .expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn join(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    /// The `VA_STATE_DIR` of this sandbox.
    pub fn state_root(&self) -> PathBuf {
        self.join("va-state")
    }

    /// `$VA_STATE_DIR/state/runs.json`.
    pub fn runs_json(&self) -> PathBuf {
        self.state_root().join("state").join("runs.json")
    }

    /// `va` with this sandbox's state dir, run from the sandbox.
    pub fn va(&self) -> assert_cmd::Command {
        let mut c = assert_cmd::Command::cargo_bin("va").expect("va binary");
        c.env("VA_STATE_DIR", self.state_root())
            .env_remove("VA_LOG")
            .current_dir(self.path());
        c
    }

    /// Writes `job` as `name` in the sandbox and returns its path.
    pub fn write_job(&self, name: &str, job: &Value) -> PathBuf {
        let p = self.join(name);
        std::fs::write(&p, serde_json::to_string_pretty(job).unwrap()).unwrap();
        p
    }

    /// `va run JOB --workdir WD`, asserting success; returns the final path and the manifest.
    pub fn run_ok(&self, job: &Path, workdir: &Path) -> (PathBuf, Value) {
        let out = self
            .va()
            .arg("run")
            .arg(job)
            .arg("--workdir")
            .arg(workdir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "va run {} failed ({:?}):\n{}",
            job.display(),
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        let manifest = read_json(&workdir.join("manifest.json"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let final_path = PathBuf::from(
            stdout
                .lines()
                .last()
                .expect("va run prints the final path")
                .trim(),
        );
        assert!(
            final_path.is_file(),
            "final {} missing",
            final_path.display()
        );
        (final_path, manifest)
    }
}

/// The first line `child` writes to its (piped) stdout, waited for at most `within`; `None`
/// when none came.
pub fn first_stdout_line(
    child: &mut std::process::Child,
    within: std::time::Duration,
) -> Option<String> {
    use std::io::BufRead;
    let stdout = child.stdout.take()?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    rx.recv_timeout(within).ok()
}

pub fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", p.display()))
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A 16-bit PCM WAV of `samples` frames: a 330 Hz tone at half scale (channel 2 a fifth up).
pub fn write_wav(path: &Path, rate: u32, channels: u16, samples: u64) {
    let spec = hound::WavSpec {
        channels,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for i in 0..samples {
        let t = i as f64 / f64::from(rate);
        for c in 0..channels {
            let f = 330.0 * (1.0 + 0.5 * f64::from(c));
            let v = (t * f * std::f64::consts::TAU).sin() * 16000.0;
            w.write_sample(v as i16).unwrap();
        }
    }
    w.finalize().unwrap();
}

/// A solid RGB PNG.
pub fn write_solid_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb))
        .save(path)
        .unwrap();
}

/// A PNG with a smooth green/blue gradient and a darker centre disc: far from magenta, red and
/// grey, so it cannot be mistaken for the solid end images used by the tests.
pub fn write_face_png(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        let fx = x as f32 / w as f32;
        let fy = y as f32 / h as f32;
        let (dx, dy) = (fx - 0.5, fy - 0.5);
        let disc = dx * dx + dy * dy < 0.04;
        let g = if disc { 110.0 } else { 140.0 + 80.0 * fy };
        let b = if disc { 70.0 } else { 60.0 + 120.0 * fx };
        image::Rgb([20, g as u8, b as u8])
    });
    img.save(path).unwrap();
}

/// Runs ffprobe with `args` (plus `-v error -of json`) on `file` and parses its output.
pub fn ffprobe_json(file: &Path, args: &[&str]) -> Value {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(file)
        .output()
        .expect("ffprobe (the test oracle) must be installed");
    assert!(
        out.status.success(),
        "ffprobe {args:?} {}: {}",
        file.display(),
        stderr_of(&out)
    );
    serde_json::from_slice(&out.stdout).expect("ffprobe JSON")
}

/// Every decoded video frame's PTS, in decode-output (presentation) order.
pub fn video_frame_pts(file: &Path) -> Vec<i64> {
    let v = ffprobe_json(
        file,
        &["-select_streams", "v:0", "-show_entries", "frame=pts"],
    );
    v["frames"]
        .as_array()
        .expect("frames")
        .iter()
        .map(|f| f["pts"].as_i64().expect("every frame has a pts"))
        .collect()
}

/// `ffprobe -count_frames`: the number of video frames actually decoded.
pub fn count_video_frames(file: &Path) -> u64 {
    let v = ffprobe_json(
        file,
        &[
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=nb_read_frames",
        ],
    );
    v["streams"][0]["nb_read_frames"]
        .as_str()
        .expect("nb_read_frames")
        .parse()
        .unwrap()
}

/// The first stream of `kind` ("video" / "audio") with its basic fields.
pub fn stream(file: &Path, kind: &str) -> Value {
    let v = ffprobe_json(
        file,
        &["-show_entries", "stream=index,codec_type,codec_name,width,height,time_base,duration_ts,sample_rate,channels,r_frame_rate,avg_frame_rate"],
    );
    v["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["codec_type"] == kind)
        .unwrap_or_else(|| panic!("no {kind} stream in {}", file.display()))
        .clone()
}

/// Decodes every video frame scaled (area average) to `w×h` RGB24 with the ffmpeg CLI.
pub fn decode_rgb(file: &Path, w: u32, h: u32) -> Vec<Vec<u8>> {
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args([
            "-map",
            "0:v:0",
            "-vf",
            &format!("scale={w}:{h}:flags=area"),
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .expect("ffmpeg (the test oracle) must be installed");
    assert!(
        out.status.success(),
        "ffmpeg decode {}: {}",
        file.display(),
        stderr_of(&out)
    );
    let size = (w * h * 3) as usize;
    assert_eq!(out.stdout.len() % size, 0, "partial frame from ffmpeg");
    out.stdout.chunks(size).map(<[u8]>::to_vec).collect()
}

/// Decodes video frame 0 at full size as RGB24 (width, height, pixels).
pub fn decode_first_frame(file: &Path) -> (u32, u32, Vec<u8>) {
    let s = stream(file, "video");
    let (w, h) = (
        s["width"].as_u64().unwrap() as u32,
        s["height"].as_u64().unwrap() as u32,
    );
    let out = std::process::Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-i"])
        .arg(file)
        .args([
            "-map",
            "0:v:0",
            "-frames:v",
            "1",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-",
        ])
        .output()
        .expect("ffmpeg");
    assert!(out.status.success(), "ffmpeg: {}", stderr_of(&out));
    assert_eq!(out.stdout.len(), (w * h * 3) as usize);
    (w, h, out.stdout)
}

/// Pixel `(x, y)` of an RGB24 buffer `w` wide.
pub fn px(buf: &[u8], w: u32, x: u32, y: u32) -> [u8; 3] {
    let i = ((y * w + x) * 3) as usize;
    [buf[i], buf[i + 1], buf[i + 2]]
}

/// Largest per-channel difference.
pub fn max_diff(a: [u8; 3], b: [u8; 3]) -> u8 {
    (0..3).map(|i| a[i].abs_diff(b[i])).max().unwrap()
}

/// `va verify FILE --json`, parsed.
pub fn va_verify(sb: &Sandbox, file: &Path) -> Value {
    let out = sb
        .va()
        .arg("verify")
        .arg(file)
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "va verify {}: {}",
        file.display(),
        stderr_of(&out)
    );
    serde_json::from_slice(&out.stdout).expect("va verify --json prints JSON")
}

/// Round half up of `num/den` in integers.
pub fn round_half_up(num: u128, den: u128) -> u128 {
    (2 * num + den) / (2 * den)
}

/// A PNG whose header is whole and claims `w`×`h` pixels, with an empty image stream (one
/// stored zlib block): what a decompression bomb or a cut file looks like from its header.
pub fn header_only_png(path: &Path, w: u32, h: u32) {
    fn crc(t: &[u8], d: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in t.iter().chain(d) {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let chunk = |t: &[u8], d: &[u8]| -> Vec<u8> {
        let mut v = (d.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(t);
        v.extend_from_slice(d);
        v.extend_from_slice(&crc(t, d).to_be_bytes());
        v
    };
    let mut ihdr = w.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.extend(chunk(b"IHDR", &ihdr));
    bytes.extend(chunk(
        b"IDAT",
        &[
            0x78, 0x01, 0x01, 0x00, 0x00, 0xff, 0xff, 0x00, 0x00, 0x00, 0x01,
        ],
    ));
    bytes.extend(chunk(b"IEND", b""));
    std::fs::write(path, bytes).unwrap();
}
