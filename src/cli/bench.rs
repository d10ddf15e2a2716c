//! `va bench`: encode throughput. Renders a speech job (start image + end image, silence
//! buffers) with the full pipeline and, in the same run, the encode floor: the same frames
//! pre-rendered in memory and the same padded audio through the same encoders, video and
//! audio concurrently, with nothing else to do. Each measurement runs in a child process of
//! `va` itself, so wall time and peak memory (VmHWM) are the job's own; runs are paired and
//! the medians reported.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::{Args, ValueEnum};
use serde::Serialize;
use serde_json::{json, Value};

use crate::error::{Context, Error, ErrorKind, Result};
use crate::job;
use crate::media::encode::{encode_mp4, AudioSettings, FrameProducer, VideoSettings};
use crate::media::picture::Yuv420;
use crate::record::{EventLog, Manifest};
use crate::stages::compose::Compositor;
use crate::stages::{prepare, run_job, RunOptions};

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Speech length in seconds (generated input).
    #[arg(long, default_value_t = 60.0)]
    pub seconds: f64,
    #[arg(long, default_value_t = 854)]
    pub width: u32,
    #[arg(long, default_value_t = 480)]
    pub height: u32,
    #[arg(long, default_value = "25")]
    pub fps: String,
    #[arg(long, default_value = "veryfast")]
    pub preset: String,
    #[arg(long, default_value_t = 20)]
    pub crf: u8,
    #[arg(long, default_value_t = 0.5)]
    pub pre: f64,
    #[arg(long, default_value_t = 1.0)]
    pub post: f64,
    /// Paired runs (full job, then floor); medians are reported.
    #[arg(long, default_value_t = 5)]
    pub runs: usize,
    /// Use this audio instead of generated speech-like audio.
    #[arg(long)]
    pub audio: Option<PathBuf>,
    #[arg(long)]
    pub start: Option<PathBuf>,
    #[arg(long)]
    pub end: Option<PathBuf>,
    /// Also measure the full job's peak memory at 1 and 10 minutes of audio.
    #[arg(long)]
    pub memory_scan: bool,
    /// Keep the bench folder (inputs, workdirs) here instead of a temp dir.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ChildKind {
    Full,
    Floor,
}

#[derive(Args, Debug)]
pub struct ChildArgs {
    #[arg(value_enum)]
    kind: ChildKind,
    #[arg(long)]
    job: PathBuf,
    #[arg(long)]
    workdir: PathBuf,
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
    let sample = match a.kind {
        ChildKind::Full => {
            let opts = RunOptions {
                workdir: a.workdir.clone(),
                resume: false,
                state_dir: a.workdir.join("state"),
                job_file: Some(a.job.clone()),
                progress: false,
                events: None,
            };
            let t = Instant::now();
            let out = run_job(&j, &opts)?;
            let wall = t.elapsed().as_secs_f64();
            let stages = stage_times(&out.manifest);
            Sample {
                wall_seconds: wall,
                peak_rss_mb: peak_rss_mb(),
                frames: out.manifest.target_frames.unwrap_or(0),
                stages,
            }
        }
        ChildKind::Floor => floor(&j, &a.workdir)?,
    };
    println!("{}", serde_json::to_string(&sample).unwrap_or_default());
    Ok(0)
}

fn stage_times(m: &Manifest) -> Value {
    let mut out = serde_json::Map::new();
    for (name, ph) in m.phases.iter() {
        if let Some(d) = ph.fields.get("duration_seconds") {
            out.insert(name.to_string(), d.clone());
        }
    }
    if let Some(r) = m.phases.get("encode").and_then(|p| p.fields.get("report")) {
        for k in [
            "render_seconds",
            "video_encode_seconds",
            "audio_encode_seconds",
        ] {
            if let Some(v) = r.get(k) {
                out.insert(format!("encode.{k}"), v.clone());
            }
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
fn floor(j: &job::Job, workdir: &Path) -> Result<Sample> {
    let mut m = Manifest::new("bench-floor");
    let p = prepare::prepare(j, workdir, &mut m)?;
    let mut comp = Compositor::for_prepared(j, &p)?;
    let mut frames = Vec::with_capacity(p.frames.target_frames as usize);
    for i in 0..p.frames.target_frames {
        let mut f = Yuv420::new(p.render.0, p.render.1);
        comp.render(i, &mut f)?;
        frames.push(f);
    }
    let fps = p.frames.fps;
    let video = VideoSettings {
        width: p.render.0,
        height: p.render.1,
        fps_num: fps.num() as u32,
        fps_den: fps.den() as u32,
        frames: p.frames.target_frames,
        preset: j.encode.preset.as_str().to_string(),
        crf: j.encode.crf,
        threads: j.encode.threads,
    };
    let audio = AudioSettings {
        wav: p.wav.clone(),
        bitrate: j.encode.audio_bitrate,
    };
    let t = Instant::now();
    let report = encode_mp4(
        &workdir.join("floor.mp4"),
        &video,
        Box::new(Replay(frames)),
        &audio,
        &|_| {},
    )?;
    let wall = t.elapsed().as_secs_f64();
    Ok(Sample {
        wall_seconds: wall,
        peak_rss_mb: peak_rss_mb(),
        frames: report.video_frames,
        stages: json!({"video_encode_seconds": report.video_encode_seconds, "audio_encode_seconds": report.audio_encode_seconds}),
    })
}

/// Deterministic speech-like audio: voiced harmonics under a syllable envelope, with pauses.
fn write_speech(path: &Path, seconds: f64) -> Result<()> {
    let rate = 48_000u32;
    let spec = hound::WavSpec {
        channels: 2,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).at(ErrorKind::Internal, path)?;
    let n = (seconds * f64::from(rate)) as u64;
    let mut noise: u32 = 0x1234_5678;
    for i in 0..n {
        let t = i as f64 / f64::from(rate);
        let f0 = 120.0 + 25.0 * (t * 0.7).sin();
        let syll = (t * 4.3 * std::f64::consts::TAU).sin().max(0.0);
        let pause = if (t * 0.37).fract() < 0.12 { 0.0 } else { 1.0 };
        let mut v = 0.0;
        for h in 1..8 {
            v += (t * f0 * f64::from(h) * std::f64::consts::TAU).sin() / f64::from(h);
        }
        noise ^= noise << 13;
        noise ^= noise >> 17;
        noise ^= noise << 5;
        let hiss = (f64::from(noise) / f64::from(u32::MAX) - 0.5) * 0.05;
        let s = ((v * 0.25 * syll + hiss) * pause * 20_000.0).clamp(-32_000.0, 32_000.0) as i16;
        w.write_sample(s).at(ErrorKind::Internal, path)?;
        w.write_sample(s).at(ErrorKind::Internal, path)?;
    }
    w.finalize().at(ErrorKind::Internal, path)
}

fn write_picture(path: &Path, w: u32, h: u32, end: bool) -> Result<()> {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
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
    });
    img.save(path)
        .map_err(|e| Error::at_path(ErrorKind::Internal, path, e))
}

fn spawn_child(kind: &str, job: &Path, workdir: &Path) -> Result<(Sample, f64)> {
    let exe = std::env::current_exe().ctx(ErrorKind::Internal, "finding the va binary")?;
    let t = Instant::now();
    let out = Command::new(exe)
        .args(["__bench-child", kind, "--job"])
        .arg(job)
        .arg("--workdir")
        .arg(workdir)
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
    let doc = json!({
        "audio": audio, "start_image": start, "end_image": end,
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
    let start = match &a.start {
        Some(p) => p.clone(),
        None => {
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

    let (mut full, mut floor, mut ratio, mut rss) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut last_full: Option<Sample> = None;
    for r in 0..a.runs.max(1) {
        let (fs, fwall) = spawn_child("full", &job, &dir.join(format!("full-{r}")))?;
        let (ls, _) = spawn_child("floor", &job, &dir.join(format!("floor-{r}")))?;
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
    }
    let frames = last_full.as_ref().map_or(0, |s| s.frames);
    let full_med = median(full.clone());
    let mut report = json!({
        "settings": {"seconds": a.seconds, "width": a.width, "height": a.height, "fps": a.fps,
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
    });
    if a.memory_scan {
        let mut scan = serde_json::Map::new();
        for minutes in [1u32, 10] {
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
            let (s, wall) = spawn_child("full", &j, &dir.join(format!("mem-{minutes}")))?;
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
