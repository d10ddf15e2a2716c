//! Fetching one asset: from `https://` (or `http://` when the manifest allows it), `file://`
//! or a path relative to the manifest's folder, into a temp file beside the destination that
//! is renamed into place only after its SHA-256 matched. A failed, interrupted or mismatching
//! fetch leaves nothing at the destination (and no temp file either).
//!
//! Redirects are followed here, not by reqwest: only 301/302/303/307/308, at most
//! [`MAX_REDIRECTS`] hops, and every hop is checked against the same scheme rules as the
//! first URL (an https source cannot be redirected to plain http unless http is allowed).

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};
use crate::files::atomic;

/// The most redirects one download follows.
pub const MAX_REDIRECTS: usize = 5;

/// Sent with every request (some hosts refuse clients without one).
pub const USER_AGENT: &str = concat!("vidax/", env!("CARGO_PKG_VERSION"), " (va install)");

/// Where an asset comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Http(Url),
    File(PathBuf),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Http(u) => write!(f, "{u}"),
            Source::File(p) => write!(f, "{}", p.display()),
        }
    }
}

/// Parses a manifest `url`: `https://…`/`http://…`, `file://…`, or a path (relative ones
/// resolve against `manifest_dir`).
pub fn resolve_source(url: &str, manifest_dir: &Path) -> Result<Source> {
    let failed = |why: String| Error::new(ErrorKind::DownloadFailed, format!("{url}: {why}"));
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("https://") || lower.starts_with("http://") {
        return Url::parse(url)
            .map(Source::Http)
            .map_err(|e| failed(format!("not a valid URL ({e})")));
    }
    if lower.starts_with("file:") {
        let u = Url::parse(url).map_err(|e| failed(format!("not a valid URL ({e})")))?;
        return u
            .to_file_path()
            .map(Source::File)
            .map_err(|()| failed("not a local file URL".into()));
    }
    if url.contains("://") {
        return Err(failed(
            "unsupported scheme (use https://, file:// or a path)".into(),
        ));
    }
    if url.trim().is_empty() {
        return Err(failed("empty source".into()));
    }
    Ok(Source::File(manifest_dir.join(url)))
}

/// An error with its causes (`a: b: c`): reqwest's own message alone hides the reason
/// (refused, certificate, DNS).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Downloads with one client: no automatic redirects, a User-Agent, and a 60 s limit on every
/// read (a stalled server fails; a slow but moving one does not).
pub struct Fetcher {
    client: reqwest::blocking::Client,
    allow_insecure_http: bool,
    progress: bool,
}

impl Fetcher {
    pub fn new(allow_insecure_http: bool, progress: bool) -> Result<Fetcher> {
        let client = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(USER_AGENT)
            .connect_timeout(Duration::from_secs(30))
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::internal(format!("HTTP client: {e}")))?;
        Ok(Fetcher {
            client,
            allow_insecure_http,
            progress,
        })
    }

    /// Fetches `source` to `dest` (its folder must exist) if its SHA-256 is `sha256`; returns
    /// the byte count. Errors: `DOWNLOAD_FAILED` (source unreachable, refused or cut short),
    /// `HASH_MISMATCH` (nothing is written), `INTERNAL` (the destination cannot be written).
    pub fn fetch(&self, id: &str, source: &Source, dest: &Path, sha256: &str) -> Result<u64> {
        let (mut reader, length): (Box<dyn Read>, Option<u64>) = match source {
            Source::File(p) => {
                let f = std::fs::File::open(p).map_err(|e| {
                    Error::new(
                        ErrorKind::DownloadFailed,
                        format!("asset {id}: source {}: {e}", p.display()),
                    )
                })?;
                let len = f.metadata().ok().map(|m| m.len());
                (Box::new(f), len)
            }
            Source::Http(url) => {
                let resp = self.open(id, url)?;
                let len = resp.content_length();
                (Box::new(resp), len)
            }
        };
        let mut tmp = atomic::temp_beside(dest, ".partial")?;
        let bar = self.bar(id, length);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got: u64 = 0;
        loop {
            let n = match reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(Error::new(
                        ErrorKind::DownloadFailed,
                        format!(
                            "asset {id}: {source}: interrupted after {got} bytes: {}",
                            chain(&e)
                        ),
                    )
                    .with_hint("nothing was kept; run va install again"))
                }
            };
            hasher.update(&buf[..n]);
            tmp.write_all(&buf[..n]).map_err(|e| {
                Error::at_path(ErrorKind::Internal, dest, format!("cannot write: {e}"))
            })?;
            got += n as u64;
            if let Some(b) = &bar {
                b.set_position(got);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if let Some(want) = length.filter(|&l| l != got) {
            return Err(Error::new(
                ErrorKind::DownloadFailed,
                format!("asset {id}: {source}: cut short: {got} of {want} bytes"),
            )
            .with_hint("nothing was kept; run va install again"));
        }
        let actual = format!("{:x}", hasher.finalize());
        if !actual.eq_ignore_ascii_case(sha256) {
            return Err(Error::new(
                ErrorKind::HashMismatch,
                format!(
                    "asset {id}: {source} has SHA-256 {actual}, the manifest expects {sha256}; nothing was written to {}",
                    dest.display()
                ),
            )
            .with_hint("check the asset's url and sha256 in the assets manifest"));
        }
        tmp.as_file()
            .sync_all()
            .map_err(|e| Error::at_path(ErrorKind::Internal, dest, format!("cannot sync: {e}")))?;
        atomic::persist(tmp, dest)?;
        Ok(got)
    }

    /// `GET url`, following up to [`MAX_REDIRECTS`] redirects by hand.
    fn open(&self, id: &str, first: &Url) -> Result<reqwest::blocking::Response> {
        let failed =
            |why: String| Error::new(ErrorKind::DownloadFailed, format!("asset {id}: {why}"));
        let mut url = first.clone();
        for hop in 0..=MAX_REDIRECTS {
            self.allowed(id, &url, hop)?;
            let resp = self
                .client
                .get(url.clone())
                .send()
                .map_err(|e| failed(format!("GET {url} failed: {}", chain(&e))))?;
            let status = resp.status().as_u16();
            if matches!(status, 301 | 302 | 303 | 307 | 308) {
                if hop == MAX_REDIRECTS {
                    return Err(failed(format!(
                        "{first}: more than {MAX_REDIRECTS} redirects (the last to {url})"
                    )));
                }
                let location = resp
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .ok_or_else(|| {
                        failed(format!("GET {url} answered {status} without a Location"))
                    })?;
                url = url.join(location).map_err(|e| {
                    failed(format!(
                        "GET {url} redirects to a bad Location {location:?} ({e})"
                    ))
                })?;
                continue;
            }
            if !resp.status().is_success() {
                return Err(failed(format!("GET {url} answered {}", resp.status())));
            }
            return Ok(resp);
        }
        unreachable!("the loop returns on its last hop")
    }

    fn allowed(&self, id: &str, url: &Url, hop: usize) -> Result<()> {
        let via = if hop == 0 {
            String::new()
        } else {
            format!(" (redirect {hop})")
        };
        match url.scheme() {
            "https" => Ok(()),
            "http" if self.allow_insecure_http => Ok(()),
            "http" => Err(Error::new(
                ErrorKind::DownloadFailed,
                format!("asset {id}: {url}{via}: http:// is refused (allow_insecure_http is false)"),
            )
            .with_hint("use an https:// source, or set \"allow_insecure_http\": true in the assets manifest")),
            other => Err(Error::new(
                ErrorKind::DownloadFailed,
                format!("asset {id}: {url}{via}: scheme {other} is not allowed"),
            )),
        }
    }

    fn bar(&self, id: &str, length: Option<u64>) -> Option<indicatif::ProgressBar> {
        use std::io::IsTerminal;
        if !self.progress || !std::io::stderr().is_terminal() {
            return None;
        }
        let bar = match length {
            Some(l) => indicatif::ProgressBar::new(l),
            None => indicatif::ProgressBar::new_spinner(),
        };
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg} {bar:40} {bytes}/{total_bytes} {percent}% {bytes_per_sec} eta {eta}",
        ) {
            bar.set_style(style);
        }
        bar.set_message(id.to_string());
        Some(bar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_resolve_by_scheme_and_relative_to_the_manifest() {
        let dir = Path::new("/m");
        assert_eq!(
            resolve_source("weights/a.bin", dir).unwrap(),
            Source::File(PathBuf::from("/m/weights/a.bin"))
        );
        assert_eq!(
            resolve_source("/abs/a.bin", dir).unwrap(),
            Source::File(PathBuf::from("/abs/a.bin"))
        );
        assert_eq!(
            resolve_source("file:///x/a%20b.bin", dir).unwrap(),
            Source::File(PathBuf::from("/x/a b.bin"))
        );
        assert!(matches!(
            resolve_source("https://h/x", dir).unwrap(),
            Source::Http(_)
        ));
        let e = resolve_source("ftp://h/x", dir).unwrap_err();
        assert_eq!(e.kind, ErrorKind::DownloadFailed);
    }

    #[test]
    fn a_file_source_with_the_wrong_hash_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src.bin");
        std::fs::write(&src, b"hello").unwrap();
        let dest = d.path().join("dest.bin");
        let f = Fetcher::new(false, false).unwrap();
        let e = f
            .fetch("t", &Source::File(src.clone()), &dest, &"0".repeat(64))
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::HashMismatch);
        let names: Vec<_> = std::fs::read_dir(d.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "only the source is left");
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(f.fetch("t", &Source::File(src), &dest, good).unwrap(), 5);
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
    }
}
