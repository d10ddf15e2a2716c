//! Builds the native av_log bridge (native/av_log_bridge.c) against the system's FFmpeg.
//!
//! Fails early with the Debian packages to install when FFmpeg's development files are missing,
//! instead of leaving the user with a bindgen or linker error.

const DEBIAN_PACKAGES: &str = "libavcodec-dev libavformat-dev libavutil-dev libswscale-dev \
     libswresample-dev libavfilter-dev libavdevice-dev clang libclang-dev pkg-config";

fn main() {
    println!("cargo:rerun-if-changed=native/av_log_bridge.c");
    println!("cargo:rerun-if-changed=build.rs");

    let mut includes = Vec::new();
    for lib in [
        "libavutil",
        "libavcodec",
        "libavformat",
        "libswscale",
        "libswresample",
    ] {
        match pkg_config::Config::new().cargo_metadata(false).probe(lib) {
            Ok(found) => includes.extend(found.include_paths),
            Err(e) => {
                eprintln!(
                    "\nvidax: FFmpeg development files for {lib} were not found ({e}).\n\
                     Install them with:\n  sudo apt-get install -y {DEBIAN_PACKAGES}\n\
                     (or run ./setup.sh, which does this)\n"
                );
                std::process::exit(1);
            }
        }
    }

    let mut build = cc::Build::new();
    build.file("native/av_log_bridge.c").warnings(true);
    for dir in includes {
        build.include(dir);
    }
    build.compile("vidax_native");
    // The shim calls into libavutil; the ffmpeg-sys crate links it, but state it for clarity.
    println!("cargo:rustc-link-lib=avutil");
}
