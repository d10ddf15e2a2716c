//! Probing and decoding an arbitrary file the way a run does: start-kind probe, audio decode
//! with its length checks, image load under the pixel limit, start-video probe and the first
//! frames. Errors are fine; panics, hangs and runaway memory are not.
#![no_main]

use std::path::PathBuf;

use libfuzzer_sys::fuzz_target;
use vidax::media;

fn scratch() -> PathBuf {
    let dir = std::env::var_os("VIDAX_FUZZ_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
    dir.join(format!("vidax-fuzz-{}.bin", std::process::id()))
}

fuzz_target!(|data: &[u8]| {
    let path = scratch();
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let _ = media::probe::probe_start(&path);
    if let Ok(input) = media::audio::AudioInput::open(&path) {
        let mut budget: usize = 20_000_000;
        let _ = input.decode(|chunk| {
            budget = budget.saturating_sub(chunk.len());
            if budget == 0 {
                Err(vidax::Error::internal("fuzz: decode budget spent"))
            } else {
                Ok(())
            }
        });
    }
    let _ = media::picture::load_image(&path, 4_000_000, [0, 0, 0]);
    if let Ok(probe) = media::video::probe_video(&path) {
        if probe.frame_count() < 10_000 {
            if let Ok(mut frames) = media::video::VideoFrames::open(&path, &probe, [0, 0, 0]) {
                for k in 0..probe.frame_count().min(3) {
                    if frames.picture(k).is_err() {
                        break;
                    }
                }
            }
        }
    }
});
