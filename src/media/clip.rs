//! A lossless constant-rate clip of RGB frames: how the main segment's planned frames of a start
//! video reach ComfyUI (`VHS_LoadVideo` reads every frame of it, no rate change, no resize).
//!
//! FFV1 (intra-only, lossless) in QuickTime (`.mov`: exact timestamps in time base `1/fps_num`;
//! Matroska would round them to milliseconds), pixel format `bgr0`: what a reader gets back is
//! exactly the RGB that was written (VideoHelperSuite decodes through OpenCV, whose swscale
//! conversion from `bgr0` to BGR is a byte shuffle). Frame `k` has PTS `k` in time base
//! `1/fps`, so the clip is CFR by construction and holds exactly the frames pushed.

use std::path::{Path, PathBuf};

use ffmpeg_next as av;

use crate::error::{Error, ErrorKind, Result};

fn ff<'a>(path: &'a Path, what: &'a str) -> impl Fn(av::Error) -> Error + 'a {
    move |e| Error::at_path(ErrorKind::FfmpegFailed, path, format!("{what}: {e}"))
}

/// Writes frames to a lossless clip; [`LosslessClip::finish`] completes the file.
pub struct LosslessClip {
    path: PathBuf,
    octx: av::format::context::Output,
    enc: av::encoder::Video,
    frame: av::frame::Video,
    tb: av::Rational,
    ost_tb: av::Rational,
    width: u32,
    height: u32,
    frames: u64,
}

impl LosslessClip {
    /// Opens `path` (QuickTime) for `width`×`height` frames at `fps_num/fps_den`.
    pub fn create(
        path: &Path,
        width: u32,
        height: u32,
        fps_num: u32,
        fps_den: u32,
    ) -> Result<LosslessClip> {
        super::init();
        let (Ok(num), Ok(den)) = (i32::try_from(fps_num), i32::try_from(fps_den)) else {
            return Err(Error::at_path(
                ErrorKind::FfmpegFailed,
                path,
                format!("fps {fps_num}/{fps_den} does not fit FFmpeg's 32-bit rationals"),
            ));
        };
        let mut octx = super::open_output(path, Some("mov"))
            .map_err(|e| Error::at_path(ErrorKind::FfmpegFailed, path, e))?;
        let codec = av::encoder::find_by_name("ffv1").ok_or_else(|| {
            Error::at_path(
                ErrorKind::FfmpegFailed,
                path,
                "the linked FFmpeg has no FFV1 encoder",
            )
            .with_hint("run va doctor")
        })?;
        let tb = av::Rational::new(den, num);
        let mut enc = av::codec::context::Context::new_with_codec(codec)
            .encoder()
            .video()
            .map_err(ff(path, "FFV1 context"))?;
        enc.set_width(width);
        enc.set_height(height);
        enc.set_format(av::format::Pixel::BGRZ);
        enc.set_time_base(tb);
        enc.set_frame_rate(Some(av::Rational::new(num, den)));
        if octx
            .format()
            .flags()
            .contains(av::format::Flags::GLOBAL_HEADER)
        {
            enc.set_flags(av::codec::Flags::GLOBAL_HEADER);
        }
        let enc = enc
            .open_with(av::Dictionary::new())
            .map_err(ff(path, "opening the FFV1 encoder"))?;
        {
            let mut ost = octx
                .add_stream(codec)
                .map_err(ff(path, "adding the video stream"))?;
            ost.set_parameters(&enc);
            ost.set_time_base(tb);
            ost.set_avg_frame_rate(av::Rational::new(num, den));
            ost.set_rate(av::Rational::new(num, den));
        }
        octx.write_header()
            .map_err(ff(path, "writing the clip header"))?;
        let ost_tb = octx.stream(0).map(|s| s.time_base()).unwrap_or(tb);
        Ok(LosslessClip {
            path: path.to_path_buf(),
            octx,
            enc,
            frame: av::frame::Video::new(av::format::Pixel::BGRZ, width, height),
            tb,
            ost_tb,
            width,
            height,
            frames: 0,
        })
    }

    /// Appends one frame: interleaved 8-bit RGB, `width·height·3` bytes.
    pub fn push_rgb(&mut self, rgb: &[u8]) -> Result<()> {
        let (w, h) = (self.width as usize, self.height as usize);
        if rgb.len() != w * h * 3 {
            return Err(Error::internal(format!(
                "clip frame of {} bytes for {w}x{h}",
                rgb.len()
            )));
        }
        let stride = self.frame.stride(0);
        let data = self.frame.data_mut(0);
        for (y, row) in rgb.chunks_exact(w * 3).enumerate() {
            let out = &mut data[y * stride..y * stride + w * 4];
            for (px, o) in row.chunks_exact(3).zip(out.chunks_exact_mut(4)) {
                o.copy_from_slice(&[px[2], px[1], px[0], 255]);
            }
        }
        self.frame.set_pts(Some(self.frames as i64));
        let path = self.path.clone();
        self.enc
            .send_frame(&self.frame)
            .map_err(ff(&path, "encoding a frame"))?;
        self.frames += 1;
        self.drain()
    }

    fn drain(&mut self) -> Result<()> {
        let mut pkt = av::Packet::empty();
        while self.enc.receive_packet(&mut pkt).is_ok() {
            pkt.set_stream(0);
            pkt.rescale_ts(self.tb, self.ost_tb);
            pkt.write_interleaved(&mut self.octx)
                .map_err(ff(&self.path, "writing a packet"))?;
        }
        Ok(())
    }

    /// Flushes the encoder and writes the trailer; returns the frames written.
    pub fn finish(mut self) -> Result<u64> {
        let path = self.path.clone();
        self.enc
            .send_eof()
            .map_err(ff(&path, "flushing the FFV1 encoder"))?;
        self.drain()?;
        self.octx
            .write_trailer()
            .map_err(ff(&path, "writing the clip trailer"))?;
        Ok(self.frames)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clip_reads_back_with_every_frame_at_its_constant_rate() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.mov");
        let (w, h) = (6u32, 4u32);
        let mut clip = LosslessClip::create(&path, w, h, 30_000, 1001).unwrap();
        let mut all = Vec::new();
        for k in 0..5u8 {
            let rgb: Vec<u8> = (0..w * h * 3)
                .map(|i| (i as u8).wrapping_mul(7) ^ k)
                .collect();
            clip.push_rgb(&rgb).unwrap();
            all.extend_from_slice(&rgb);
        }
        assert!(clip.push_rgb(&[0; 3]).is_err(), "a frame of the wrong size");
        assert_eq!(clip.finish().unwrap(), 5);
        let probe = crate::media::video::probe_video(&path).unwrap();
        assert_eq!(probe.frame_count(), 5);
        assert_eq!(probe.display_size(), (w, h));
        assert!(!probe.vfr);
        assert_eq!(probe.pts, [0, 1001, 2002, 3003, 4004]);
        // An independent decoder (the ffmpeg CLI, a test oracle) reads back the very bytes.
        let out = std::process::Command::new("ffmpeg")
            .args(["-v", "error", "-i"])
            .arg(&path)
            .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
            .output()
            .expect("ffmpeg CLI (test oracle)");
        assert!(out.status.success());
        assert_eq!(out.stdout, all);
    }
}
