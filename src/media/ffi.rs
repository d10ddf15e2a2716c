//! The FFI boundary: the native av_log bridge and the few raw libav calls the safe wrapper
//! lacks. This is the only module (with native/) allowed to use `unsafe`; every block says
//! why it is sound.
#![allow(unsafe_code)] // reason: this module is the crate's FFI boundary

use std::ffi::{c_char, c_int, CStr};

use ffmpeg_next as av;
use ffmpeg_next::packet::Ref as _;

extern "C" {
    /// Implemented in native/av_log_bridge.c.
    fn vidax_install_av_log_bridge(max_level: c_int);
}

/// Called by the native shim with one formatted FFmpeg log line.
#[no_mangle]
pub extern "C" fn vidax_av_log_emit(level: c_int, msg: *const c_char) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the shim passes a NUL-terminated buffer that lives for the duration of this call;
    // we copy it out before returning.
    let text = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    // A panic must never unwind into C.
    let _ = std::panic::catch_unwind(move || emit(level, &text));
}

fn emit(level: c_int, text: &str) {
    // AV_LOG_* values: PANIC 0, FATAL 8, ERROR 16, WARNING 24, INFO 32, VERBOSE 40, DEBUG 48.
    if level <= 16 {
        tracing::error!(stage = "ffmpeg", "{text}");
    } else if level <= 24 {
        tracing::warn!(stage = "ffmpeg", "{text}");
    } else if level <= 32 {
        tracing::info!(stage = "ffmpeg", "{text}");
    } else {
        tracing::debug!(stage = "ffmpeg", "{text}");
    }
}

/// Routes FFmpeg's log lines at or above warning level to `tracing`.
pub fn install_log_bridge() {
    // SAFETY: installs a callback with the signature av_log expects; the callback only
    // formats into a stack buffer and calls vidax_av_log_emit, which is thread-safe.
    unsafe { vidax_install_av_log_bridge(24) }
}

/// Restores the default SIGPIPE action, so `va status | head` ends quietly like other
/// command-line tools instead of failing on a closed pipe (Rust ignores SIGPIPE by default).
pub fn restore_default_sigpipe() {
    // SAFETY: signal(2) with SIG_DFL for SIGPIPE is async-signal-safe and is called once at
    // start-up, before any other thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Whether the demuxer marked `pkt` as "decode, but do not show" (`AV_PKT_FLAG_DISCARD`): the
/// frames an MP4 edit list cuts off before its start. The safe wrapper's `flags()` truncates
/// this bit away.
pub fn packet_is_discarded(pkt: &av::Packet) -> bool {
    // SAFETY: `as_ptr` points at the AVPacket that `pkt` owns, valid for this borrow; reading
    // its plain `flags` integer has no other effect.
    let flags = unsafe { (*pkt.as_ptr()).flags };
    flags & av::ffi::AV_PKT_FLAG_DISCARD != 0
}

/// A swscale context that may move to another thread.
///
/// `ffmpeg_next`'s scaling context is not `Send`, but the compositor that owns a start video's
/// decoder is built on the run thread and then moved to the render thread.
pub struct Scaler(av::software::scaling::Context);

// SAFETY: an SwsContext holds no thread-local state and no reference to the thread that
// created it; it is only unsound to use one from two threads at once, which `Scaler` (not
// `Sync`, used through `&mut self`) rules out.
unsafe impl Send for Scaler {}

impl Scaler {
    pub fn new(
        src: av::format::Pixel,
        src_w: u32,
        src_h: u32,
        dst: av::format::Pixel,
        dst_w: u32,
        dst_h: u32,
        flags: av::software::scaling::Flags,
    ) -> Result<Scaler, av::Error> {
        av::software::scaling::Context::get(src, src_w, src_h, dst, dst_w, dst_h, flags).map(Scaler)
    }

    pub fn run(
        &mut self,
        input: &av::frame::Video,
        output: &mut av::frame::Video,
    ) -> Result<(), av::Error> {
        self.0.run(input, output)
    }

    /// Tells swscale how to read a Y'CbCr source: the matrix (`SWS_CS_*`, e.g.
    /// `SWS_CS_ITU709`) and whether its levels are full range (0–255, the `yuvj*` formats and
    /// sources flagged `pc`) or limited (16–235); and the output's range (`dst_full`: true for
    /// RGB, false for limited-range Y'CbCr; a Y'CbCr output keeps the source's matrix, swscale
    /// converts only the range). Without this call swscale assumes BT.601 and takes the range
    /// from the pixel format name only. Returns false when swscale refused (e.g. for an RGB
    /// source, where it does not apply).
    pub fn set_source_colorspace(
        &mut self,
        sws_matrix: c_int,
        full_range: bool,
        dst_full: bool,
    ) -> bool {
        // SAFETY: the context pointer is valid for `&mut self`; sws_getCoefficients returns a
        // pointer to a static table of 4 ints for any index (unknown ones give the default),
        // and sws_setColorspaceDetails only reads the two tables and updates the context.
        unsafe {
            let ctx = self.0.as_mut_ptr();
            let src = av::ffi::sws_getCoefficients(sws_matrix);
            let dst = av::ffi::sws_getCoefficients(av::ffi::SWS_CS_ITU709);
            av::ffi::sws_setColorspaceDetails(
                ctx,
                src,
                c_int::from(full_range),
                dst,
                c_int::from(dst_full),
                0,
                1 << 16,
                1 << 16,
            ) >= 0
        }
    }
}

/// The path as the C string libavformat opens: `file:` plus the path's bytes, so that any
/// file name works (not only UTF-8 ones, which is all `ffmpeg_next`'s path helpers take: they
/// panic on others) and no name is taken for a protocol (`http:…`, `concat:…`).
fn file_url(path: &std::path::Path) -> Result<std::ffi::CString, av::Error> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = b"file:".to_vec();
    bytes.extend_from_slice(path.as_os_str().as_bytes());
    std::ffi::CString::new(bytes).map_err(|_| av::Error::InvalidData)
}

/// Opens `path` for demuxing and reads its stream info (what `ffmpeg_next::format::input`
/// does, for every file name).
pub fn open_input(path: &std::path::Path) -> Result<av::format::context::Input, av::Error> {
    use av::ffi::avformat_open_input;
    let url = file_url(path)?;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: `ctx` is a valid out-pointer initialised to null as the API requires, `url` is
    // a NUL-terminated string that outlives the call, and null format/options are allowed.
    let opened = unsafe {
        avformat_open_input(
            &mut ctx,
            url.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if opened < 0 {
        return Err(av::Error::from(opened));
    }
    find_stream_info(&mut ctx)?;
    // SAFETY: `ctx` is an opened input context; `Input` takes ownership and closes it on drop.
    Ok(unsafe { av::format::context::Input::wrap(ctx) })
}

/// How many bytes libavformat reads from a [`FileInput`]'s file at a time.
const FILE_IO_BUFFER: usize = 64 * 1024;

/// The custom I/O behind a [`FileInput`]: the `AVIOContext` and the file it reads. Freed after
/// the demuxer that uses it (field order in [`FileInput`]).
struct FileIo {
    io: *mut av::ffi::AVIOContext,
    file: *mut Source,
}

/// The file a [`FileIo`] reads, at a position of its own (positioned reads), so that handles
/// of the same open file (`File::try_clone`) never move each other.
struct Source {
    file: std::fs::File,
    pos: u64,
}

// SAFETY: `FileIo` owns its context and file outright (nothing else points at them but the
// demuxer it travels with inside one `FileInput`); moving it to another thread moves the
// sole owner, as `ffmpeg_next` allows for `Input`.
unsafe impl Send for FileIo {}

impl Drop for FileIo {
    fn drop(&mut self) {
        // SAFETY: `io` came from `avio_alloc_context` and is freed once, here, after the demuxer
        // that used it was closed (it never owns a custom `pb`); its current buffer is the one
        // libavformat last gave it, which `av_freep` frees. `file` is the `Box` leaked in
        // `open_input_file`, taken back once.
        unsafe {
            if !self.io.is_null() {
                av::ffi::av_freep(std::ptr::addr_of_mut!((*self.io).buffer).cast());
                av::ffi::avio_context_free(&mut self.io);
            }
            drop(Box::from_raw(self.file));
        }
    }
}

/// A demuxer that reads through a file this process has already opened, instead of opening
/// the path again: a file is hashed, sniffed and probed over one open (see
/// [`crate::stages::admit`]). Dereferences to the `Input` it is.
pub struct FileInput {
    // Declared first: dropped (closed) before the I/O it reads through.
    input: av::format::context::Input,
    _io: FileIo,
}

impl std::ops::Deref for FileInput {
    type Target = av::format::context::Input;
    fn deref(&self) -> &Self::Target {
        &self.input
    }
}

impl std::ops::DerefMut for FileInput {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.input
    }
}

/// `read_packet` of the custom I/O: reads from the `File` behind `opaque`.
unsafe extern "C" fn read_file(opaque: *mut std::ffi::c_void, buf: *mut u8, size: c_int) -> c_int {
    use std::os::unix::fs::FileExt;
    // SAFETY: `opaque` is the `Source` a live `FileIo` owns; libavformat calls this only while
    // the context exists and never from two threads at once.
    let src = unsafe { &mut *opaque.cast::<Source>() };
    let Ok(len) = usize::try_from(size) else {
        return av::ffi::AVERROR(av::ffi::EINVAL);
    };
    // SAFETY: libavformat hands a buffer of `size` writable bytes.
    let out = unsafe { std::slice::from_raw_parts_mut(buf, len) };
    loop {
        return match src.file.read_at(out, src.pos) {
            Ok(0) => av::ffi::AVERROR_EOF,
            Ok(n) => {
                src.pos += n as u64;
                c_int::try_from(n).unwrap_or(size)
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => av::ffi::AVERROR(e.raw_os_error().unwrap_or(av::ffi::EIO)),
        };
    }
}

/// `seek` of the custom I/O, with libavformat's `AVSEEK_SIZE` (the file's size).
unsafe extern "C" fn seek_file(opaque: *mut std::ffi::c_void, offset: i64, whence: c_int) -> i64 {
    // SAFETY: as in `read_file`.
    let src = unsafe { &mut *opaque.cast::<Source>() };
    let invalid = i64::from(av::ffi::AVERROR(av::ffi::EINVAL));
    let len = match src.file.metadata() {
        Ok(m) => i64::try_from(m.len()).unwrap_or(i64::MAX),
        Err(e) => return i64::from(av::ffi::AVERROR(e.raw_os_error().unwrap_or(av::ffi::EIO))),
    };
    if whence & av::ffi::AVSEEK_SIZE != 0 {
        return len;
    }
    let from = match whence & !av::ffi::AVSEEK_FORCE {
        libc::SEEK_SET => 0,
        libc::SEEK_CUR => i64::try_from(src.pos).unwrap_or(i64::MAX),
        libc::SEEK_END => len,
        _ => return invalid,
    };
    match from.checked_add(offset).and_then(|p| u64::try_from(p).ok()) {
        Some(p) => {
            src.pos = p;
            i64::try_from(p).unwrap_or(i64::MAX)
        }
        None => invalid,
    }
}

/// Opens `file` (already open; read from its start, whatever its position) for demuxing and
/// reads its stream info, as [`open_input`] does for a path; `path` is only its name (the
/// format is guessed from the content first, then the name, as for [`open_input`]). A handle
/// of the same open file (`File::try_clone`) demuxes it again without opening the path.
pub fn open_input_file(
    file: std::fs::File,
    path: &std::path::Path,
) -> Result<FileInput, av::Error> {
    use av::ffi::{av_malloc, avformat_alloc_context, avformat_open_input, avio_alloc_context};
    let url = file_url(path)?;
    let mut io = FileIo {
        io: std::ptr::null_mut(),
        file: Box::into_raw(Box::new(Source { file, pos: 0 })),
    };
    // SAFETY: a plain allocation; null is checked.
    let buf = unsafe { av_malloc(FILE_IO_BUFFER) }.cast::<u8>();
    if buf.is_null() {
        return Err(av::Error::from(av::ffi::AVERROR(libc::ENOMEM)));
    }
    // SAFETY: `buf` is an `av_malloc`ed buffer of the size given, which the context takes over;
    // `opaque` is the `Source` that `io` owns and outlives the context; the callbacks match
    // libavformat's signatures; no write callback for a read-only context.
    io.io = unsafe {
        avio_alloc_context(
            buf,
            FILE_IO_BUFFER as c_int,
            0,
            io.file.cast(),
            Some(read_file),
            None,
            Some(seek_file),
        )
    };
    if io.io.is_null() {
        // SAFETY: the context was not created, so `buf` is still ours to free.
        unsafe { av::ffi::av_free(buf.cast()) };
        return Err(av::Error::from(av::ffi::AVERROR(libc::ENOMEM)));
    }
    // SAFETY: a plain allocation; null is checked.
    let mut ctx = unsafe { avformat_alloc_context() };
    if ctx.is_null() {
        return Err(av::Error::from(av::ffi::AVERROR(libc::ENOMEM)));
    }
    // SAFETY: `ctx` is a fresh context; with AVFMT_FLAG_CUSTOM_IO libavformat reads through
    // `pb` and never closes it (`io` does, after the demuxer). On failure
    // `avformat_open_input` frees `ctx` itself; `url` outlives the call.
    let opened = unsafe {
        (*ctx).pb = io.io;
        (*ctx).flags |= av::ffi::AVFMT_FLAG_CUSTOM_IO;
        avformat_open_input(
            &mut ctx,
            url.as_ptr(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    if opened < 0 {
        return Err(av::Error::from(opened));
    }
    find_stream_info(&mut ctx)?;
    Ok(FileInput {
        // SAFETY: `ctx` is an opened input context; `Input` takes ownership and closes it on
        // drop, before `io` is freed.
        input: unsafe { av::format::context::Input::wrap(ctx) },
        _io: io,
    })
}

/// Creates `path` for muxing as `format` (what `ffmpeg_next::format::output_as` does, for
/// every file name).
pub fn open_output(
    path: &std::path::Path,
    format: Option<&str>,
) -> Result<av::format::context::Output, av::Error> {
    use av::ffi::{avformat_alloc_output_context2, avformat_free_context, avio_open};
    let url = file_url(path)?;
    let name = format
        .map(std::ffi::CString::new)
        .transpose()
        .map_err(|_| av::Error::InvalidData)?;
    // Guessing the container from the name must not see the `file:` prefix.
    let plain = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| av::Error::InvalidData)?;
    let mut ctx = std::ptr::null_mut();
    // SAFETY: `ctx` is a valid out-pointer; the strings are NUL-terminated and outlive the
    // call; a null format name means "guess from the file name".
    let made = unsafe {
        avformat_alloc_output_context2(
            &mut ctx,
            std::ptr::null_mut(),
            name.as_ref().map_or(std::ptr::null(), |n| n.as_ptr()),
            plain.as_ptr(),
        )
    };
    if made < 0 || ctx.is_null() {
        return Err(av::Error::from(made.min(-1)));
    }
    // SAFETY: `ctx` was just allocated; `pb` is its I/O slot, opened for writing to `url`.
    let io = unsafe { avio_open(&mut (*ctx).pb, url.as_ptr(), av::ffi::AVIO_FLAG_WRITE) };
    if io < 0 {
        // SAFETY: the context was allocated above, has no open I/O, and is freed exactly once.
        unsafe { avformat_free_context(ctx) };
        return Err(av::Error::from(io));
    }
    // SAFETY: `ctx` is an allocated output context with open I/O; `Output` owns it from here
    // (closing the I/O and freeing it on drop).
    Ok(unsafe { av::format::context::Output::wrap(ctx) })
}

/// Makes `frame`'s buffers writable (`av_frame_make_writable`): when an encoder still holds a
/// reference to them, the frame gets fresh buffers (the data copied), so the next picture can
/// be written into it without touching what the encoder holds. False when FFmpeg failed.
pub fn make_frame_writable(frame: &mut av::frame::Video) -> bool {
    // SAFETY: `as_mut_ptr` is the AVFrame `frame` owns, valid and exclusively borrowed for the
    // call; av_frame_make_writable only replaces its buffers with copies when they are shared.
    unsafe { av::ffi::av_frame_make_writable(frame.as_mut_ptr()) >= 0 }
}

/// Reads the stream info of an input `avformat_open_input` just opened; on failure closes
/// it (and nulls `ctx`), so the caller only returns the error.
fn find_stream_info(ctx: &mut *mut av::ffi::AVFormatContext) -> Result<(), av::Error> {
    use av::ffi::{avformat_close_input, avformat_find_stream_info};
    // SAFETY: `*ctx` is the context avformat_open_input just opened; null options are allowed.
    let found = unsafe { avformat_find_stream_info(*ctx, std::ptr::null_mut()) };
    if found < 0 {
        // SAFETY: `*ctx` was opened by the caller and is closed exactly once here (it also
        // nulls it).
        unsafe { avformat_close_input(ctx) };
        return Err(av::Error::from(found));
    }
    Ok(())
}
