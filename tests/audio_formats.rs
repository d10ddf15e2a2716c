//! Issue 3, audio: every common format, sample width, channel count and rate, built by the
//! engine's own encoders (`vidax::media::synth`), decoded through the same path a run uses
//! (`write_padded_wav`), and checked for the exact padded sample count.

mod common;

use std::path::Path;

use common::*;
use ffmpeg_next::format::{sample::Type, Sample};
use vidax::media::audio::{output_rate, write_padded_wav, AudioInput};
use vidax::media::synth::{tone, write_audio, AudioSpec};

/// Programme length of every generated file (not a multiple of any codec frame).
const N: usize = 12_345;
const PRE: u64 = 1_000;
const POST: u64 = 2_000;

/// Writes `spec` with `n` samples, pads it and returns (programme samples, padded WAV samples,
/// WAV rate, WAV channels).
fn roundtrip(dir: &Path, name: &str, spec: &AudioSpec, n: usize) -> (u64, u64, u32, u16) {
    let src = dir.join(name);
    let ch = usize::from(spec.channels);
    write_audio(&src, spec, &tone(n, ch, spec.rate)).expect("encode");
    let dst = dir.join(format!("{name}.padded.wav"));
    let padded =
        write_padded_wav(&src, &dst, output_rate, |_| PRE, |_| POST).expect("decode and pad");
    let wav = hound::WavReader::open(&dst).expect("padded wav");
    let spec = wav.spec();
    (
        padded.input_samples,
        u64::from(wav.duration()),
        spec.sample_rate,
        spec.channels,
    )
}

/// The first audio stream's codec, sample width and start time, by ffprobe (the oracle).
fn probe_audio(p: &Path) -> serde_json::Value {
    ffprobe_json(
        p,
        &[
            "-select_streams",
            "a:0",
            "-show_entries",
            "stream=codec_name,bits_per_sample,bits_per_raw_sample,start_time",
        ],
    )["streams"][0]
        .clone()
}

fn assert_exact(name: &str, spec: AudioSpec) {
    let sb = Sandbox::new();
    let (programme, total, rate, ch) = roundtrip(sb.path(), name, &spec, N);
    assert_eq!(programme, N as u64, "{name}: programme samples");
    assert_eq!(total, PRE + N as u64 + POST, "{name}: padded samples");
    assert_eq!(rate, spec.rate, "{name}: rate kept");
    assert_eq!(
        ch,
        spec.channels.min(2),
        "{name}: channels (downmix above 2)"
    );
}

#[test]
fn wav_every_sample_width_is_sample_exact() {
    let cases: [(&str, Sample, u32, u16); 6] = [
        ("pcm_u8", Sample::U8(Type::Packed), 8_000, 1),
        ("pcm_s16le", Sample::I16(Type::Packed), 16_000, 2),
        ("pcm_s24le", Sample::I32(Type::Packed), 22_050, 1),
        ("pcm_s32le", Sample::I32(Type::Packed), 96_000, 2),
        ("pcm_f32le", Sample::F32(Type::Packed), 44_100, 1),
        ("pcm_f64le", Sample::F64(Type::Packed), 48_000, 2),
    ];
    for (codec, fmt, rate, ch) in cases {
        let spec = AudioSpec {
            sample_format: Some(fmt),
            ..AudioSpec::new(codec, rate, ch)
        };
        assert_exact(&format!("{codec}.wav"), spec);
    }
}

#[test]
fn wav_bit_depth_is_what_the_header_says() {
    // The encoders above really wrote 8/16/24/32-bit int and 32/64-bit float.
    let sb = Sandbox::new();
    for (codec, bits) in [
        ("pcm_u8", 8),
        ("pcm_s16le", 16),
        ("pcm_s24le", 24),
        ("pcm_s32le", 32),
        ("pcm_f32le", 32),
        ("pcm_f64le", 64),
    ] {
        let p = sb.join(&format!("{codec}.wav"));
        write_audio(&p, &AudioSpec::new(codec, 16_000, 1), &tone(100, 1, 16_000)).unwrap();
        let s = probe_audio(&p);
        assert_eq!(s["codec_name"], codec, "{codec}");
        assert_eq!(
            s["bits_per_sample"].as_u64().or(s["bits_per_raw_sample"]
                .as_str()
                .and_then(|v| v.parse().ok())),
            Some(bits),
            "{codec}: {s}"
        );
    }
}

#[test]
fn mp3_with_gapless_header_is_sample_exact_at_several_rates() {
    for (rate, ch) in [(44_100, 2), (8_000, 1), (32_000, 2)] {
        assert_exact(
            &format!("lame_{rate}.mp3"),
            AudioSpec::new("libmp3lame", rate, ch),
        );
    }
}

#[test]
fn mp3_without_xing_header_counts_every_decoded_frame() {
    // Without the Xing/LAME header nothing tells the decoder about the encoder delay and the
    // end padding: the programme is every decoded frame, as every player plays it. The oracle
    // is ffprobe's packet count × 1152 samples per MPEG-1 Layer III frame.
    let sb = Sandbox::new();
    let spec = AudioSpec {
        muxer_options: &[("write_xing", "0")],
        ..AudioSpec::new("libmp3lame", 44_100, 2)
    };
    let (programme, total, _, _) = roundtrip(sb.path(), "noxing.mp3", &spec, N);
    let probe = ffprobe_json(
        &sb.join("noxing.mp3"),
        &["-count_packets", "-show_entries", "stream=nb_read_packets"],
    );
    let packets: u64 = probe["streams"][0]["nb_read_packets"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("packet count");
    assert_eq!(programme, packets * 1152);
    assert!(programme > N as u64, "delay and padding are inside");
    assert_eq!(total, PRE + programme + POST);
}

#[test]
fn aac_in_m4a_skips_the_priming_and_ends_at_the_edit_list() {
    // Movie timescale = sample rate: the edit list states the programme to the sample.
    for (rate, ch) in [(48_000u32, 2u16), (8_000, 1), (44_100, 2)] {
        let ts = rate.to_string();
        let opts = [("movie_timescale", ts.as_str())];
        let spec = AudioSpec {
            muxer_options: &opts,
            ..AudioSpec::new("aac", rate, ch)
        };
        assert_exact(&format!("aac_{rate}.m4a"), spec);
    }
}

#[test]
fn aac_in_m4a_with_a_millisecond_edit_list_ends_on_that_millisecond() {
    // Most muxers state the edit list in 1/1000 s: the programme is that, to the sample.
    let sb = Sandbox::new();
    let spec = AudioSpec::new("aac", 48_000, 2);
    let (programme, _, _, _) = roundtrip(sb.path(), "ms.m4a", &spec, N);
    let ms = (N as u64 * 1000 + 24_000) / 48_000;
    assert_eq!(programme, ms * 48);
}

#[test]
fn opus_and_vorbis_in_ogg_are_sample_exact() {
    assert_exact("voice.opus", AudioSpec::new("libopus", 48_000, 2));
    assert_exact("mono.opus", AudioSpec::new("libopus", 48_000, 1));
    assert_exact("voice.ogg", AudioSpec::new("libvorbis", 44_100, 2));
    assert_exact("voice16k.ogg", AudioSpec::new("libvorbis", 16_000, 1));
}

#[test]
fn flac_is_sample_exact_up_to_96k() {
    assert_exact("hi.flac", AudioSpec::new("flac", 96_000, 2));
    assert_exact("lo.flac", AudioSpec::new("flac", 8_000, 1));
}

#[test]
fn multichannel_is_downmixed_to_stereo() {
    assert_exact("surround.wav", AudioSpec::new("pcm_s16le", 48_000, 6));
    assert_exact("quad.flac", AudioSpec::new("flac", 44_100, 4));
    // The downmix keeps the level: a 5.1 file with the same tone on every channel gives a
    // stereo programme of that tone (no clipping, no silence).
    let sb = Sandbox::new();
    let p = sb.join("same.wav");
    let mono = tone(4_800, 1, 48_000);
    let six: Vec<f32> = mono.iter().flat_map(|&s| [s; 6]).collect();
    write_audio(&p, &AudioSpec::new("pcm_f32le", 48_000, 6), &six).unwrap();
    let mut got = Vec::new();
    let input = AudioInput::open(&p).unwrap();
    assert_eq!(input.info().out_channels, 2);
    input
        .decode(|c| {
            got.extend_from_slice(c);
            Ok(())
        })
        .unwrap();
    let peak = got.iter().fold(0f32, |m, s| m.max(s.abs()));
    assert!((0.3..=1.0).contains(&peak), "downmix peak {peak}");
}

#[test]
fn every_rate_from_8_to_96_khz_keeps_its_length() {
    // Rates AAC carries stay; others are resampled to the next AAC rate with the length kept
    // to the sample: round(N · out / in).
    let sb = Sandbox::new();
    for rate in [
        8_000u32, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 37_800, 44_100, 48_000, 50_000,
        64_000, 88_200, 96_000,
    ] {
        let name = format!("r{rate}.wav");
        let spec = AudioSpec::new("pcm_s16le", rate, 1);
        let (programme, total, out_rate, _) = roundtrip(sb.path(), &name, &spec, N);
        let expect = (N as u64 * u64::from(out_rate) + u64::from(rate) / 2) / u64::from(rate);
        assert_eq!(programme, expect, "{rate} Hz → {out_rate} Hz");
        assert_eq!(total, PRE + expect + POST, "{rate} Hz");
        assert_eq!(
            out_rate,
            vidax::media::audio::output_rate(rate),
            "{rate} Hz output rate"
        );
    }
}

#[test]
fn a_stream_that_starts_late_counts_its_programme_only() {
    // Half a second of start time in Matroska and in Ogg: the programme is the samples, the
    // offset is not speech.
    let spec = AudioSpec {
        start_samples: 24_000,
        ..AudioSpec::new("pcm_s16le", 48_000, 2)
    };
    let sb = Sandbox::new();
    let (programme, _, _, _) = roundtrip(sb.path(), "late.mka", &spec, N);
    assert_eq!(programme, N as u64);
    let start = probe_audio(&sb.join("late.mka"))["start_time"]
        .as_str()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap();
    assert!(
        (start - 0.5).abs() < 1e-3,
        "the file really starts late: {start}"
    );
    let flac = AudioSpec {
        start_samples: 4_410,
        ..AudioSpec::new("flac", 44_100, 1)
    };
    let (programme, _, _, _) = roundtrip(sb.path(), "late.oga", &flac, N);
    assert_eq!(programme, N as u64);
}

#[test]
fn a_video_file_given_as_audio_uses_its_first_audio_stream() {
    // The engine's own MP4 (H.264 + AAC) as the audio of a new job.
    let sb = Sandbox::new();
    let wav = sb.join("v.wav");
    write_wav(&wav, 16_000, 1, 32_000);
    let img = sb.join("f.png");
    write_solid_png(&img, 64, 48, [90, 120, 200]);
    let out = sb
        .va()
        .args(["produce", "--no-comfyui", "--fps", "25"])
        .arg("--audio")
        .arg(&wav)
        .arg("--start")
        .arg(&img)
        .arg("--workdir")
        .arg(sb.join("w1"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let mp4 = sb.join("w1/fertig.mp4");
    let input = AudioInput::open(&mp4).unwrap();
    assert_eq!(input.info().codec, "aac");
    let stats = input.decode(|_| Ok(())).unwrap();
    // Delivered at 48 kHz: round(32000 · 48000 / 16000) = 96000 samples.
    assert_eq!(
        stats.samples, 96_000,
        "the first run's programme, to the sample"
    );
}
