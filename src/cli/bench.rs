//! `va bench`: encode throughput. Renders a speech job (speech-like audio, silence buffers,
//! an end image) from one visual source (`--source`: a start image, a 1080p30 start video, or
//! a frames folder like ComfyUI's) with the full pipeline and, in the same run, the encode
//! floor on the same source: the same frames pre-rendered in memory and the same padded audio
//! through the same encoders, video and audio concurrently, with nothing else to do. Each
//! measurement runs in a child process of `va` itself, so wall time and peak memory (VmHWM)
//! are the job's own; runs are paired and the medians reported, with every thread's CPU time
//! (the critical path).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::job;
use crate::media::encode::{encode_mp4, AudioSettings, EncodeReport, FrameProducer, VideoSettings};
use crate::media::picture::{Planes, Yuv420, YuvColor};
use crate::media::render::Renderer;
use crate::record::{EventLog, Manifest};
use crate::stages::comfyui::{FrameZoom, Visual};
use crate::stages::compose::Compositor;
use crate::stages::{prepare, run_job, RunOptions};
use crate::timeline::{crop_window, CropWindow, ZoomCurve};

/// The visual source a bench job renders from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// A start image through the zoom (the fallback path).
    Image,
    /// A start video (generated: 1080p at 30 fps, or `--start`), cut to the job.
    Video,
    /// A frames folder like ComfyUI's output (`000001.png`…, generated photo-like PNGs).
    Frames,
    /// What the default start-image lip-sync returns (`VIDAX_SavePatches`): per frame the box
    /// around a moving mouth that differs from the start picture, laid over it by the engine
    /// and zoomed as the lip-synced still is.
    Patches,
}

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// The visual source: image, video, frames or patches.
    #[arg(long, value_enum, default_value = "image")]
    pub source: Source,
    /// Speech length in seconds (generated input).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    /// Output width in pixels.
    #[arg(long, default_value_t = 854)]
    pub width: u32,
    /// Output height in pixels.
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    /// Frame rate (25, 30000/1001 …).
    #[arg(long, default_value = "25")]
    pub fps: String,
    /// libx264 preset (encode.preset).
    #[arg(long, default_value = "veryfast")]
    pub preset: String,
    /// libx264 constant rate factor (encode.crf).
    #[arg(long, default_value_t = 20)]
    pub crf: u8,
    /// Silence before the speech, seconds.
    #[arg(long, default_value_t = 0.5)]
    pub pre: f64,
    /// Silence after the speech, seconds.
    #[arg(long, default_value_t = 1.0)]
    pub post: f64,
    /// Paired runs (full job, then floor); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Use this audio instead of generated speech-like audio.
    #[arg(long)]
    pub audio: Option<PathBuf>,
    /// The start image (`--source image`) or start video (`--source video`) instead of a
    /// generated one.
    #[arg(long)]
    pub start: Option<PathBuf>,
    /// An end image, held over the post silence.
    #[arg(long)]
    pub end: Option<PathBuf>,
    /// Also measure the full job's peak memory at 1, 10 and 30 minutes of audio.
    #[arg(long)]
    pub memory_scan: bool,
    /// Keep the bench folder (inputs, workdirs) here instead of a temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// One JSON document on stdout (per-stage and per-thread times).
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ChildKind {
    Full,
    Floor,
    /// Writes the floor's frames as raw yuv420p (`<workdir>/frames.yuv`) and prints the
    /// padded WAV's path: the input of an ffmpeg command-line floor (`bench/sources.sh`).
    Dump,
}

#[derive(Args, Debug)]
pub struct ChildArgs {
    #[arg(value_enum)]
    kind: ChildKind,
    #[arg(long)]
    job: PathBuf,
    #[arg(long)]
    workdir: PathBuf,
    /// The main segment from this frames folder (`000001.png`…) instead of the job's start.
    #[arg(long)]
    frames: Option<PathBuf>,
    /// The frames are patches over this picture (the lip-synced still): laid over it and
    /// zoomed as the start image is.
    #[arg(long, requires = "frames")]
    base: Option<PathBuf>,
}

/// What one child measured.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
struct Sample {
    wall_seconds: f64,
    peak_rss_mb: f64,
    frames: u64,
    #[serde(default)]
    stages: Value,
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The child side: one measured job in this process.
pub fn child(a: ChildArgs, events: &EventLog) -> Result<i32> {
    let j = job::load(&a.job)?;
    let _ = std::fs::remove_dir_all(&a.workdir);
    std::fs::create_dir_all(&a.workdir).at(ErrorKind::Internal, &a.workdir)?;
    events.set_workdir(Some(&a.workdir))?;
    let sample = match (a.kind, &a.frames) {
        (ChildKind::Full, None) => {
            let opts = RunOptions {
                workdir: a.workdir.clone(),
                resume: false,
                state_dir: a.workdir.join("state"),
                job_file: Some(a.job.clone()),
                progress: crate::progress::Reporter::silent(),
                run_id: None,
                events: None,
            };
            let t = Instant::now();
            let admitted = crate::stages::admit(j.clone(), &opts.state_dir, Vec::new())?;
            let out = run_job(&admitted, &opts)?;
            let wall = t.elapsed().as_secs_f64();
            let stages = stage_times(&out.manifest);
            Sample {
                wall_seconds: wall,
                peak_rss_mb: peak_rss_mb(),
                frames: out.manifest.target_frames.unwrap_or(0),
                stages,
            }
        }
        (ChildKind::Full, Some(dir)) => frames_full(&j, &a.workdir, dir, a.base.as_deref())?,
        (ChildKind::Floor, frames) => floor(&j, &a.workdir, frames.as_deref(), a.base.as_deref())?,
        (ChildKind::Dump, frames) => dump(&j, &a.workdir, frames.as_deref(), a.base.as_deref())?,
    };
    println!("{}", serde_json::to_string(&sample).unwrap_or_default());
    Ok(0)
}

/// The compositor of a bench job: the job's own start, or the frames folder (patches over
/// `base`, zoomed as the lip-synced still, when there is a base).
fn compositor(
    j: &job::Job,
    p: &prepare::Prepared,
    frames: Option<&Path>,
    base: Option<&Path>,
) -> Result<Compositor> {
    match frames {
        None => Compositor::for_prepared(j, p),
        Some(dir) => {
            let count = frame_count(dir);
            let visual = Visual::Frames {
                dir: dir.to_path_buf(),
                count,
                zoom: base.map(|_| FrameZoom { centre: None }),
                base: base.map(Path::to_path_buf),
            };
            Compositor::for_run(j, p, Some(&visual), None)
        }
    }
}

fn frame_count(dir: &Path) -> u64 {
    (1u64..)
        .take_while(|i| dir.join(format!("{i:06}.png")).is_file())
        .count() as u64
}

fn settings(j: &job::Job, p: &prepare::Prepared) -> (VideoSettings, AudioSettings) {
    let fps = p.frames.fps;
    (
        VideoSettings {
            width: p.render.0,
            height: p.render.1,
            fps_num: fps.num() as u32,
            fps_den: fps.den() as u32,
            frames: p.frames.target_frames,
            preset: j.encode.preset.as_str().to_string(),
            crf: j.encode.crf,
            threads: j.encode.threads,
        },
        AudioSettings {
            wav: p.wav.clone(),
            bitrate: j.encode.audio_bitrate,
        },
    )
}

/// The full job over a frames folder: what `run` does after ComfyUI returned the frames
/// (prepare, then the one-pass render and encode).
fn frames_full(j: &job::Job, workdir: &Path, dir: &Path, base: Option<&Path>) -> Result<Sample> {
    let t = Instant::now();
    let mut m = Manifest::new("bench-frames");
    // Admission (the probes) counts, as it did when prepare probed the inputs itself.
    let admitted = crate::stages::admit(j.clone(), &workdir.join("state"), Vec::new())?;
    let p = prepare::prepare(&admitted, workdir, &mut m)?;
    let comp = compositor(j, &p, Some(dir), base)?;
    encode_sample(j, &p, Box::new(comp), &workdir.join("final.mp4"), t)
}

/// Encodes `producer`'s frames with the job's settings into `out`; the wall time counts from
/// `t`.
fn encode_sample(
    j: &job::Job,
    p: &prepare::Prepared,
    producer: Box<dyn FrameProducer>,
    out: &Path,
    t: Instant,
) -> Result<Sample> {
    let (video, audio) = settings(j, p);
    let report = encode_mp4(out, &video, producer, &audio, &crate::progress::Silent)?;
    Ok(Sample {
        wall_seconds: t.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
        frames: report.video_frames,
        stages: report_times(&report),
    })
}

fn report_times(r: &EncodeReport) -> Value {
    json!({
        "encode.render_seconds": r.render_seconds,
        "encode.video_encode_seconds": r.video_encode_seconds,
        "encode.audio_encode_seconds": r.audio_encode_seconds,
        "encode.threads": r.threads,
    })
}

fn stage_times(m: &Manifest) -> Value {
    let mut out = serde_json::Map::new();
    for (name, ph) in m.phases.iter() {
        if let Some(d) = ph.duration_seconds {
            out.insert(name.to_string(), d.into());
        }
    }
    if let Some(r) = m
        .phases
        .encode
        .as_ref()
        .and_then(|p| p.fields.report.as_ref())
    {
        if let Value::Object(times) = report_times(r) {
            out.extend(times);
        }
    }
    Value::Object(out)
}

struct Replay(Vec<Yuv420>);

impl FrameProducer for Replay {
    fn render(&mut self, index: u64, out: &mut Yuv420) -> Result<()> {
        let f = self
            .0
            .get(index as usize)
            .ok_or_else(|| Error::internal("replay ran out of frames"))?;
        out.clone_from(f);
        Ok(())
    }
}

/// The encode floor: the same frames, rendered before the clock starts, and the same padded
/// audio, through the same encoders and muxer.
fn floor(
    j: &job::Job,
    workdir: &Path,
    frames_dir: Option<&Path>,
    base: Option<&Path>,
) -> Result<Sample> {
    let mut m = Manifest::new("bench-floor");
    // Admission (the probes) counts, as it did when prepare probed the inputs itself.
    let admitted = crate::stages::admit(j.clone(), &workdir.join("state"), Vec::new())?;
    let p = prepare::prepare(&admitted, workdir, &mut m)?;
    let mut comp = compositor(j, &p, frames_dir, base)?;
    let mut frames = Vec::with_capacity(p.frames.target_frames as usize);
    for i in 0..p.frames.target_frames {
        let mut f = Yuv420::new(p.render.0, p.render.1);
        comp.render(i, &mut f)?;
        frames.push(f);
    }
    drop(comp);
    let out = workdir.join("floor.mp4");
    encode_sample(j, &p, Box::new(Replay(frames)), &out, Instant::now())
}

/// The floor's input for the ffmpeg command line: every frame as raw yuv420p in
/// `frames.yuv`, and the padded WAV (its path in `stages.wav`, the size in `stages`).
fn dump(
    j: &job::Job,
    workdir: &Path,
    frames_dir: Option<&Path>,
    base: Option<&Path>,
) -> Result<Sample> {
    use std::io::Write;
    let mut m = Manifest::new("bench-dump");
    // Admission (the probes) counts, as it did when prepare probed the inputs itself.
    let admitted = crate::stages::admit(j.clone(), &workdir.join("state"), Vec::new())?;
    let p = prepare::prepare(&admitted, workdir, &mut m)?;
    let mut comp = compositor(j, &p, frames_dir, base)?;
    let path = workdir.join("frames.yuv");
    let file = std::fs::File::create(&path).at(ErrorKind::Internal, &path)?;
    let mut out = std::io::BufWriter::with_capacity(1 << 20, file);
    let mut f = Yuv420::new(p.render.0, p.render.1);
    for i in 0..p.frames.target_frames {
        comp.render(i, &mut f)?;
        for plane in [&f.y, &f.u, &f.v] {
            out.write_all(plane).at(ErrorKind::Internal, &path)?;
        }
    }
    out.flush().at(ErrorKind::Internal, &path)?;
    let fps = p.frames.fps;
    Ok(Sample {
        wall_seconds: 0.0,
        peak_rss_mb: peak_rss_mb(),
        frames: p.frames.target_frames,
        stages: json!({"yuv": path, "wav": p.wav, "width": p.render.0, "height": p.render.1,
                       "fps": format!("{}/{}", fps.num(), fps.den())}),
    })
}

/// Deterministic speech-like audio, as costly for AAC as recorded speech is: a glottal
/// (band-limited sawtooth) source with jitter and intonation through three vowel formants,
/// fricative noise bursts between syllables, phrase pauses, and a room-noise floor; the right
/// channel is the left with its own noise (a near-mono recording). (A few harmonics under a
/// syllable envelope, this bench's earlier signal, cost AAC about half as much.)
fn write_speech(path: &Path, seconds: f64) -> Result<()> {
    /// Two-pole resonator.
    #[derive(Clone, Copy, Default)]
    struct Res {
        y1: f64,
        y2: f64,
    }
    impl Res {
        fn run(&mut self, x: f64, f: f64, bw: f64, rate: f64) -> f64 {
            let r = (-std::f64::consts::PI * bw / rate).exp();
            let c = 2.0 * r * (std::f64::consts::TAU * f / rate).cos();
            let g = (1.0 - r) * (1.0 - r * r).sqrt() * 2.0;
            let y = g * x + c * self.y1 - r * r * self.y2;
            (self.y2, self.y1) = (self.y1, y);
            y
        }
    }
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> f64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }
    const VOWELS: [(f64, f64, f64); 8] = [
        (730.0, 1090.0, 2440.0),
        (270.0, 2290.0, 3010.0),
        (530.0, 1840.0, 2480.0),
        (570.0, 840.0, 2410.0),
        (440.0, 1020.0, 2240.0),
        (300.0, 870.0, 2240.0),
        (660.0, 1720.0, 2410.0),
        (490.0, 1350.0, 1690.0),
    ];
    let rate = 48_000u32;
    let fr = f64::from(rate);
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).at(ErrorKind::Internal, path)?;
    let n = (seconds * fr) as u64;
    let (mut rng, mut noise) = (Rng(0x9E37_79B9_7F4A_7C15), Rng(12_345));
    // 0 pause, 1 vowel, 2 fricative.
    let (mut kind, mut seg_end, mut phrase_left) = (0u8, 0u64, 0u32);
    let (mut f, mut target) = ([500.0, 1500.0, 2500.0], [500.0, 1500.0, 2500.0]);
    let (mut phase, mut f0base, mut env, mut fric) = (0.0f64, 140.0, 0.0f64, 5000.0);
    let (mut res, mut fres) = ([Res::default(); 3], [Res::default(); 2]);
    let (mut hp, mut last) = (0.0f64, 0.0f64);
    for i in 0..n {
        if i >= seg_end {
            let secs = |a: f64, b: f64, r: &mut Rng| ((a + r.next() * b) * fr) as u64;
            if phrase_left == 0 {
                kind = 0;
                phrase_left = (8.0 + rng.next() * 10.0) as u32;
                seg_end = i + secs(0.25, 0.45, &mut rng);
                f0base = 110.0 + rng.next() * 70.0;
            } else {
                phrase_left -= 1;
                if rng.next() < 0.35 {
                    kind = 2;
                    fric = 3000.0 + rng.next() * 4000.0;
                    seg_end = i + secs(0.05, 0.08, &mut rng);
                } else {
                    kind = 1;
                    let v = VOWELS[(rng.next() * 8.0) as usize % 8];
                    target = [v.0, v.1, v.2];
                    seg_end = i + secs(0.09, 0.16, &mut rng);
                }
            }
        }
        let t = i as f64 / fr;
        let level = [0.0, 1.0, 0.35][usize::from(kind)];
        env += (level - env) * 0.0015;
        for (a, b) in f.iter_mut().zip(target) {
            *a += (b - *a) * 0.002;
        }
        let f0 = f0base
            * (1.0 + 0.08 * (t * 3.1).sin() + 0.03 * (t * 11.0).sin())
            * (1.0 + 0.004 * (rng.next() - 0.5));
        let dt = f0 / fr;
        phase += dt;
        if phase >= 1.0 {
            phase -= 1.0;
        }
        // Band-limited sawtooth (polyBLEP).
        let blep = if phase < dt {
            let x = phase / dt;
            x + x - x * x - 1.0
        } else if phase > 1.0 - dt {
            let x = (phase - 1.0) / dt;
            x * x + x + x + 1.0
        } else {
            0.0
        };
        let voiced = if kind == 1 {
            2.0 * phase - 1.0 - blep
        } else {
            0.0
        };
        let white = noise.next() * 2.0 - 1.0;
        let src = (voiced + white * 0.08) * env;
        let vowel = res[0].run(src, f[0], 80.0, fr)
            + res[1].run(src, f[1], 100.0, fr) * 0.6
            + res[2].run(src, f[2], 150.0, fr) * 0.35;
        let hiss = if kind == 2 {
            let a = fres[0].run(white, fric, 1500.0, fr);
            fres[1].run(a, fric * 1.2, 2000.0, fr) * env * 1.5
        } else {
            0.0
        };
        hp = 0.995 * (hp + white - last);
        last = white;
        let v = (vowel * 0.55 + hiss + hp * 0.0015) * 20_000.0;
        let l = v.clamp(-32_000.0, 32_000.0) as i16;
        let r = (v * 0.97 + (noise.next() - 0.5) * 30.0).clamp(-32_000.0, 32_000.0) as i16;
        w.write_sample(l).at(ErrorKind::Internal, path)?;
        w.write_sample(r).at(ErrorKind::Internal, path)?;
    }
    w.finalize().at(ErrorKind::Internal, path)
}

/// A ComfyUI-like frames folder: `count` PNGs (`000001.png`…) of what a lip-sync returns, the
/// bench's start picture (with its film grain, so that the frames compress and decode like
/// photographs) with a moving mouth, under `zoom` when given: then frame `k` is the still
/// path's own rendering of main frame `k` (the engine's renderer over the same start picture),
/// so that a frames job and a still-image job give x264 the same pictures and differ only in
/// where the pictures come from. (The first frames of this bench had grain that changed every
/// frame: x264 spent three times the still path's CPU on noise no lip-sync output has.)
pub(crate) fn write_frames(
    dir: &Path,
    w: u32,
    h: u32,
    count: u64,
    zoom: Option<ZoomCurve>,
) -> Result<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    std::fs::create_dir_all(dir).at(ErrorKind::Internal, dir)?;
    if frame_count(dir) >= count {
        return Ok(()); // made by an earlier bench in this folder
    }
    let base = start_picture(w, h);
    let mut zoomed = zoom.map(|curve| {
        let rgba = image::DynamicImage::ImageRgb8(base.clone()).to_rgba8();
        let planes = Planes::from_rgba8(w, h, rgba.as_raw(), [0; 3]);
        let tightest = crop_window(1.0 + curve.strength, w, h, w, h, None).w;
        let r = Renderer::new(planes, w, h, YuvColor::BLACK, tightest);
        (curve, r, Yuv420::new(w, h))
    });
    for k in 0..count {
        let mut img = match &mut zoomed {
            None => base.clone(),
            Some((curve, r, frame)) => {
                r.render(&crop_window(curve.zoom(k), w, h, w, h, None), frame);
                yuv_to_rgb(frame)
            }
        };
        draw_mouth(&mut img, k);
        let path = dir.join(format!("{:06}.png", k + 1));
        let file = std::fs::File::create(&path).at(ErrorKind::Internal, &path)?;
        let enc = PngEncoder::new_with_quality(
            std::io::BufWriter::new(file),
            CompressionType::Default,
            FilterType::Adaptive,
        );
        img.write_with_encoder(enc)
            .map_err(|e| Error::at_path(ErrorKind::Internal, &path, e))?;
    }
    Ok(())
}

/// What the default start-image lip-sync returns for `count` frames (`VIDAX_SavePatches`):
/// frame `k` is the picture at `start` with the moving mouth of [`write_frames`], saved as
/// the box of pixels that differ from `start`, an RGB PNG placed by its `oFFs` chunk.
fn write_patches(dir: &Path, start: &Path, count: u64) -> Result<()> {
    std::fs::create_dir_all(dir).at(ErrorKind::Internal, dir)?;
    if frame_count(dir) >= count {
        return Ok(()); // made by an earlier bench in this folder
    }
    let base = image::open(start)
        .map_err(|e| Error::at_path(ErrorKind::UnsupportedFormat, start, e))?
        .to_rgb8();
    for k in 0..count {
        let mut img = base.clone();
        draw_mouth(&mut img, k);
        let path = dir.join(format!("{:06}.png", k + 1));
        let bytes = crate::media::picture::patch_png(&img, &base)?;
        std::fs::write(&path, bytes).at(ErrorKind::Internal, &path)?;
    }
    Ok(())
}

/// Frame `k`'s mouth (opening and closing with `k`) drawn into `img`.
fn draw_mouth(img: &mut image::RgbImage, k: u64) {
    let (w, h) = img.dimensions();
    let open = 0.5 + 0.5 * (k as f64 * 0.7).sin();
    for (x, y, px) in img.enumerate_pixels_mut() {
        let (u, v) = (f64::from(x) / f64::from(w), f64::from(y) / f64::from(h));
        let (dx, dy) = ((u - 0.5) / 0.08, (v - 0.62) / (0.01 + 0.03 * open));
        if dx * dx + dy * dy < 1.0 {
            let g = (x.wrapping_mul(7) ^ y.wrapping_mul(13)) % 5;
            *px = image::Rgb([88 + g as u8, 30, 40]);
        }
    }
}

/// A 1080p30 start video of `seconds`: the start picture at 1920x1080 under a slow zoom,
/// encoded by the engine itself (x264 veryfast, crf 18) with a silent track.
fn write_start_video(dir: &Path, seconds: f64) -> Result<PathBuf> {
    let path = dir.join("start-1080p30.mp4");
    if path.is_file() {
        return Ok(path);
    }
    let (w, h, fps) = (1920u32, 1080u32, 30u32);
    let frames = (seconds * f64::from(fps)).ceil() as u64;
    let img = picture_rgb(w, h, false);
    let rgba = image::DynamicImage::ImageRgb8(img).to_rgba8();
    let planes = Planes::from_rgba8(w, h, rgba.as_raw(), [0; 3]);
    struct Zoom {
        r: Renderer,
        frames: u64,
    }
    impl FrameProducer for Zoom {
        fn render(&mut self, i: u64, out: &mut Yuv420) -> Result<()> {
            let z = 1.0 + 0.15 * i as f64 / self.frames.max(1) as f64;
            let (ww, wh) = (1920.0 / z, 1080.0 / z);
            let win = CropWindow {
                x: (1920.0 - ww) / 2.0,
                y: (1080.0 - wh) / 2.0,
                w: ww,
                h: wh,
            };
            self.r.render(&win, out);
            Ok(())
        }
    }
    let r = Renderer::new(planes, w, h, YuvColor::BLACK, 1920.0 / 1.15);
    let wav = dir.join("silence.wav");
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 48_000,
        bits_per_sample: 32,
        sample_format: hound::SampleFormat::Float,
    };
    let mut sw = hound::WavWriter::create(&wav, spec).at(ErrorKind::Internal, &wav)?;
    for _ in 0..(frames * 1600) {
        sw.write_sample(0.0f32).at(ErrorKind::Internal, &wav)?;
    }
    sw.finalize().at(ErrorKind::Internal, &wav)?;
    let tmp = dir.join("start-1080p30.partial.mp4");
    encode_mp4(
        &tmp,
        &VideoSettings {
            width: w,
            height: h,
            fps_num: fps,
            fps_den: 1,
            frames,
            preset: "veryfast".into(),
            crf: 18,
            threads: 0,
        },
        Box::new(Zoom { r, frames }),
        &AudioSettings {
            wav: wav.clone(),
            bitrate: 64_000,
        },
        &crate::progress::Silent,
    )?;
    std::fs::rename(&tmp, &path).at(ErrorKind::Internal, &path)?;
    Ok(path)
}

fn write_picture(path: &Path, w: u32, h: u32, end: bool) -> Result<()> {
    let img = if end {
        picture_rgb(w, h, true)
    } else {
        start_picture(w, h)
    };
    img.save(path)
        .map_err(|e| Error::at_path(ErrorKind::Internal, path, e))
}

/// The bench's start picture: [`picture_rgb`] with a fixed film grain (±3 levels per channel),
/// as a photograph has; it makes PNGs of it about as large as a photograph's (~600 kB at
/// 854x480).
fn start_picture(w: u32, h: u32) -> image::RgbImage {
    let mut img = picture_rgb(w, h, false);
    let mut seed: u32 = 0x2545_f491;
    for px in img.pixels_mut() {
        for c in px.0.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            *c = (i32::from(*c) + (seed % 7) as i32 - 3).clamp(0, 255) as u8;
        }
    }
    img
}

/// A rendered frame as R'G'B' (BT.709 limited range, chroma taken from the sample above
/// left): the bench's frames written as a ComfyUI would.
fn yuv_to_rgb(f: &Yuv420) -> image::RgbImage {
    let cw = f.width as usize / 2;
    image::RgbImage::from_fn(f.width, f.height, |x, y| {
        let (x, y) = (x as usize, y as usize);
        let l = 255.0 / 219.0 * (f32::from(f.y[y * f.width as usize + x]) - 16.0);
        let c = (y / 2) * cw + x / 2;
        let cb = 255.0 / 224.0 * (f32::from(f.u[c]) - 128.0);
        let cr = 255.0 / 224.0 * (f32::from(f.v[c]) - 128.0);
        let r = l + 1.5748 * cr;
        let b = l + 1.8556 * cb;
        let g = (l - 0.2126 * r - 0.0722 * b) / 0.7152;
        image::Rgb([r, g, b].map(|v| v.round().clamp(0.0, 255.0) as u8))
    })
}

/// The bench's start (a face-like disc over a gradient) or end picture.
fn picture_rgb(w: u32, h: u32, end: bool) -> image::RgbImage {
    image::RgbImage::from_fn(w, h, |x, y| {
        let (u, v) = (f64::from(x) / f64::from(w), f64::from(y) / f64::from(h));
        if end {
            return image::Rgb([(30.0 + 60.0 * u) as u8, 30, (60.0 + 80.0 * v) as u8]);
        }
        let (dx, dy) = ((u - 0.5) * 1.6, (v - 0.5) * 1.1);
        let t = ((0.42 - (dx * dx + dy * dy).sqrt()) * 40.0).clamp(0.0, 1.0);
        let shade = 1.0 + 0.08 * ((u * 40.0).sin() * (v * 30.0).cos());
        let bg = [40.0 + 120.0 * u, 70.0 + 60.0 * v, 140.0 - 40.0 * u];
        let skin = [225.0 - 60.0 * v, 180.0 - 50.0 * v, 150.0 - 40.0 * u];
        let c = |k: usize| (bg[k] * (1.0 - t) + skin[k] * t * shade).clamp(0.0, 255.0) as u8;
        image::Rgb([c(0), c(1), c(2)])
    })
}

fn spawn_child(
    kind: &str,
    job: &Path,
    workdir: &Path,
    frames: Option<&Path>,
    base: Option<&Path>,
) -> Result<(Sample, f64)> {
    let exe = std::env::current_exe().ctx(ErrorKind::Internal, "finding the va binary")?;
    let t = Instant::now();
    let mut cmd = Command::new(exe);
    cmd.args(["__bench-child", kind, "--job"])
        .arg(job)
        .arg("--workdir")
        .arg(workdir);
    if let Some(dir) = frames {
        cmd.arg("--frames").arg(dir);
    }
    if let Some(b) = base {
        cmd.arg("--base").arg(b);
    }
    let out = cmd
        .output()
        .ctx(ErrorKind::Internal, "starting a bench child")?;
    let wall = t.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(Error::new(
            ErrorKind::Internal,
            format!(
                "bench child {kind} failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let sample: Sample = serde_json::from_str(line.trim())
        .ctx(ErrorKind::Internal, "reading a bench child's report")?;
    Ok((sample, wall))
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn write_job(
    dir: &Path,
    name: &str,
    a: &BenchArgs,
    audio: &Path,
    start: &Path,
    end: &Path,
) -> Result<PathBuf> {
    let start_key = if a.source == Source::Video {
        "start_video"
    } else {
        "start_image"
    };
    let doc = json!({
        "audio": audio, start_key: start, "end_image": end,
        "buffer": {"pre_seconds": a.pre, "post_seconds": a.post},
        "determinism": {"fps": a.fps, "seed": 1, "seed_policy": "fixed"},
        "render": {"width": a.width, "height": a.height},
        "comfyui": {"enable": false},
        "encode": {"preset": a.preset, "crf": a.crf}
    });
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default())
        .at(ErrorKind::Internal, &path)?;
    job::load(&path)?; // validate the bench's own job up front
    Ok(path)
}

pub fn run(a: BenchArgs) -> Result<i32> {
    let tmp = tempfile::tempdir().ctx(ErrorKind::Internal, "creating a temp dir")?;
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    std::fs::create_dir_all(&dir).at(ErrorKind::Internal, &dir)?;
    let gen = |name: &str| dir.join(name);
    let audio = match &a.audio {
        Some(p) => p.clone(),
        None => {
            write_speech(&gen("speech.wav"), a.seconds)?;
            gen("speech.wav")
        }
    };
    let start = match (&a.start, a.source) {
        (Some(p), _) => p.clone(),
        (None, Source::Video) => write_start_video(&dir, a.seconds + a.pre + a.post)?,
        (None, _) => {
            write_picture(&gen("start.png"), a.width, a.height, false)?;
            gen("start.png")
        }
    };
    let end = match &a.end {
        Some(p) => p.clone(),
        None => {
            write_picture(&gen("end.png"), a.width, a.height, true)?;
            gen("end.png")
        }
    };
    let job = write_job(&dir, "bench_job.json", &a, &audio, &start, &end)?;
    let frames_dir = match a.source {
        Source::Frames => Some(dir.join("frames")),
        Source::Patches => Some(dir.join("patches")),
        Source::Image | Source::Video => None,
    };
    if let Some(fd) = &frames_dir {
        // One frame per main frame (and a spare): the main segment is pre + speech.
        let fps = crate::timeline::time::parse_fps(&a.fps)
            .map_err(|e| Error::new(ErrorKind::Usage, format!("--fps: {e}")))?;
        let main = ((a.seconds + a.pre) * fps.to_f64()).ceil() as u64 + 1;
        if a.source == Source::Patches {
            write_patches(fd, &start, main)?;
        } else {
            let j = job::load(&job)?;
            let curve = ZoomCurve {
                mode: j.motion.mode,
                strength: j.motion.strength,
                frames: main,
            };
            write_frames(fd, a.width, a.height, main, Some(curve))?;
        }
    }
    // Patches are laid over the start picture.
    let base = (a.source == Source::Patches).then_some(start.as_path());
    let frames_dir = frames_dir.as_deref();

    let (mut full, mut floor, mut ratio, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last_full: Option<Sample> = None;
    let mut last_floor: Option<Sample> = None;
    for r in 0..a.runs.max(1) {
        let (fs, fwall) = spawn_child(
            "full",
            &job,
            &dir.join(format!("full-{r}")),
            frames_dir,
            base,
        )?;
        let (ls, _) = spawn_child(
            "floor",
            &job,
            &dir.join(format!("floor-{r}")),
            frames_dir,
            base,
        )?;
        if !a.json {
            eprintln!(
                "run {}: full {:.2} s ({:.0} MB peak), floor {:.2} s",
                r + 1,
                fwall,
                fs.peak_rss_mb,
                ls.wall_seconds
            );
        }
        ratio.push(fwall / ls.wall_seconds);
        full.push(fwall);
        floor.push(ls.wall_seconds);
        rss.push(fs.peak_rss_mb);
        last_full = Some(fs);
        last_floor = Some(ls);
    }
    let frames = last_full.as_ref().map_or(0, |s| s.frames);
    let full_med = median(full.clone());
    let mut report = json!({
        "settings": {"source": a.source, "seconds": a.seconds, "width": a.width, "height": a.height, "fps": a.fps,
                     "preset": a.preset, "crf": a.crf, "pre": a.pre, "post": a.post, "runs": a.runs},
        "frames": frames,
        "full_seconds": full, "floor_seconds": floor,
        "full_median_seconds": full_med,
        "floor_median_seconds": median(floor.clone()),
        "full_over_floor_median": median(ratio.clone()),
        "frames_per_second": frames as f64 / full_med,
        "x_real_time": (a.seconds + a.pre + a.post) / full_med,
        "peak_rss_mb_median": median(rss.clone()),
        "stages_last_full_run": last_full.map(|s| s.stages).unwrap_or_default(),
        "stages_last_floor_run": last_floor.map(|s| s.stages).unwrap_or_default(),
    });
    if a.memory_scan {
        let mut scan = serde_json::Map::new();
        for minutes in [1u32, 10, 30] {
            let wav = dir.join(format!("speech-{minutes}min.wav"));
            write_speech(&wav, f64::from(minutes) * 60.0)?;
            let j = write_job(
                &dir,
                &format!("job-{minutes}min.json"),
                &a,
                &wav,
                &start,
                &end,
            )?;
            let (s, wall) = spawn_child(
                "full",
                &j,
                &dir.join(format!("mem-{minutes}")),
                frames_dir,
                base,
            )?;
            if !a.json {
                eprintln!(
                    "memory scan: {minutes} min of audio -> {:.0} MB peak, {wall:.1} s",
                    s.peak_rss_mb
                );
            }
            scan.insert(
                format!("{minutes}min"),
                json!({"peak_rss_mb": s.peak_rss_mb, "wall_seconds": wall}),
            );
        }
        report["memory_scan"] = Value::Object(scan);
    }
    if a.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        println!(
            "full job: {:.2} s median ({:.0} frames/s, {:.1}x real time), floor {:.2} s, full/floor {:.2}, peak {:.0} MB",
            full_med,
            report["frames_per_second"].as_f64().unwrap_or(0.0),
            report["x_real_time"].as_f64().unwrap_or(0.0),
            report["floor_median_seconds"].as_f64().unwrap_or(0.0),
            report["full_over_floor_median"].as_f64().unwrap_or(0.0),
            report["peak_rss_mb_median"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(0)
}
