//! Input paths from requests, confined to the configured roots (docs/SECURITY.md).
//!
//! A path is refused (403) when it has a `..` component, when it is absolute and lies outside
//! every root, or when it lies inside a root but resolves (through a symlink anywhere on the
//! way) to a file outside every root. The lexical checks come before the file system is
//! asked anything, so a request cannot probe for files outside the roots. A path that passes
//! and does not exist is returned as it is, for the job checks to report `INPUT_NOT_FOUND`.

use std::path::{Component, Path, PathBuf};

use super::error::{ApiError, ApiResult};

/// The roots inputs may come from (canonical paths).
#[derive(Debug, Clone)]
pub struct Roots(Vec<PathBuf>);

impl Roots {
    pub fn new(canonical: Vec<PathBuf>) -> Roots {
        Roots(canonical)
    }

    /// Relative paths in requests resolve against the first root.
    pub fn base(&self) -> &Path {
        self.0.first().map_or(Path::new("/"), PathBuf::as_path)
    }

    fn inside(&self, p: &Path) -> bool {
        self.0.iter().any(|r| p.starts_with(r))
    }

    /// The path `field` of a request names, made absolute (relative to [`Roots::base`]) and
    /// confined; symlinks resolved when it exists.
    pub fn confine(&self, field: &str, given: &Path) -> ApiResult<PathBuf> {
        let shown = given.display();
        if given.components().any(|c| c == Component::ParentDir) {
            return Err(ApiError::forbidden(format!(
                "{field}: {shown}: \"..\" is not allowed in input paths"
            )));
        }
        let abs = self.base().join(given);
        // `.` components are harmless; dropping them keeps the prefix test honest.
        let abs: PathBuf = abs
            .components()
            .filter(|c| *c != Component::CurDir)
            .collect();
        if !self.inside(&abs) {
            return Err(ApiError::forbidden(format!(
                "{field}: {shown}: outside the configured roots"
            )));
        }
        match abs.canonicalize() {
            Ok(real) if self.inside(&real) => Ok(real),
            Ok(_) => Err(ApiError::forbidden(format!(
                "{field}: {shown}: a symlink leads outside the configured roots"
            ))),
            // Missing (or unreadable): let the job checks name it.
            Err(_) => Ok(abs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use axum::http::StatusCode;

    fn setup() -> (tempfile::TempDir, Roots) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("in");
        std::fs::create_dir(&root).unwrap();
        std::fs::write(root.join("a.wav"), b"x").unwrap();
        std::fs::write(dir.path().join("secret.wav"), b"x").unwrap();
        let roots = Roots::new(vec![root.canonicalize().unwrap()]);
        (dir, roots)
    }

    fn refused(r: ApiResult<PathBuf>, needle: &str) {
        let e = r.expect_err("should be refused");
        assert_eq!(e.status, StatusCode::FORBIDDEN);
        assert_eq!(e.error.kind, ErrorKind::ValidationFailed);
        assert!(e.error.message.contains(needle), "{}", e.error.message);
    }

    #[test]
    fn relative_and_absolute_paths_inside_pass() {
        let (_d, roots) = setup();
        let want = roots.base().join("a.wav");
        assert_eq!(roots.confine("audio", Path::new("a.wav")).unwrap(), want);
        assert_eq!(roots.confine("audio", Path::new("./a.wav")).unwrap(), want);
        assert_eq!(roots.confine("audio", &want).unwrap(), want);
        // Missing inside the roots: returned for INPUT_NOT_FOUND later.
        let missing = roots.confine("audio", Path::new("nope.wav")).unwrap();
        assert_eq!(missing, roots.base().join("nope.wav"));
    }

    #[test]
    fn parent_dirs_absolute_outside_and_symlinks_out_are_refused() {
        let (d, roots) = setup();
        refused(roots.confine("audio", Path::new("../secret.wav")), "\"..\"");
        refused(
            roots.confine("audio", &roots.base().join("x/../../secret.wav")),
            "\"..\"",
        );
        refused(
            roots.confine("audio", &d.path().join("secret.wav")),
            "outside",
        );
        refused(roots.confine("audio", Path::new("/etc/passwd")), "outside");
        // A sibling whose name starts like the root is not inside it.
        let sibling = PathBuf::from(format!("{}x/a.wav", roots.base().display()));
        refused(roots.confine("audio", &sibling), "outside");
        std::os::unix::fs::symlink(d.path().join("secret.wav"), roots.base().join("link.wav"))
            .unwrap();
        refused(roots.confine("audio", Path::new("link.wav")), "symlink");
        std::os::unix::fs::symlink(d.path(), roots.base().join("up")).unwrap();
        refused(
            roots.confine("audio", Path::new("up/secret.wav")),
            "symlink",
        );
    }
}
