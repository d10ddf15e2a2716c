//! SHA-256 of files: the manifest's input hashes and `va install`'s asset checks.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// SHA-256 of a file as lowercase hex, read in 64 KiB blocks (inputs can be large videos).
/// A file that cannot be opened is `INPUT_NOT_FOUND`; a read failure midway is `INTERNAL`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file =
        File::open(path).map_err(|e| Error::at_path(ErrorKind::InputNotFound, path, e))?;
    sha256_read(&mut file, path)
}

/// SHA-256 of what `file` (the file at `path`, for messages) holds from where it stands to
/// its end, as [`sha256_file`] gives it: for a file opened once and also read otherwise.
pub fn sha256_read(mut file: impl Read, path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::at_path(
                    ErrorKind::Internal,
                    path,
                    format!("read failed: {e}"),
                ))
            }
        };
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_of_known_content_and_of_a_multi_block_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(
            sha256_file(&p).unwrap(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );

        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let pb = dir.path().join("big");
        std::fs::write(&pb, &big).unwrap();
        assert_eq!(sha256_file(&pb).unwrap(), hex(&Sha256::digest(&big)));
    }
}
