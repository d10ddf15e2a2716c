//! File paths in JSON records, losslessly.
//!
//! JSON holds text, but a Unix path is bytes: a workdir named with Latin-1 bytes is a valid
//! path that no JSON string can spell. A record that wrote it lossily (U+FFFD in place of the
//! byte) would name another path, and `va status DIR` or `--resume` would then fail on it. So:
//!
//! - a path that is valid UTF-8 is written as a plain JSON string, as before;
//! - any other path is written as an object `{"escaped": "<text>"}`: its bytes with every
//!   byte that is not part of valid UTF-8, and every `%`, written as `%` and two upper-case
//!   hex digits (`/data/caf\xE9` → `{"escaped": "/data/caf%E9"}`).
//!
//! Reading accepts both forms wherever a path is read (`job.json`, `runs.json`, the manifest,
//! the API's job records). The plain string form never goes through the escaping, so an
//! ordinary path with a `%` in it reads as itself. Used with `#[serde(with = "path_json")]`
//! (or [`opt`] for an `Option<PathBuf>`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The key of the escaped form.
pub const ESCAPED_KEY: &str = "escaped";

/// The escaped text of `p` when it is not valid UTF-8; `None` when a plain string holds it.
pub fn escape(p: &Path) -> Option<String> {
    if p.to_str().is_some() {
        return None;
    }
    Some(escape_bytes(&os_bytes(p)))
}

/// The bytes of `p` (its lossy text's outside Unix).
#[cfg(unix)]
pub fn os_bytes(p: &Path) -> Vec<u8> {
    use std::os::unix::ffi::OsStrExt;
    p.as_os_str().as_bytes().to_vec()
}

#[cfg(not(unix))]
pub fn os_bytes(p: &Path) -> Vec<u8> {
    // Outside Unix an OS string is not bytes; its lossy text is the best that can be said.
    p.to_string_lossy().into_owned().into_bytes()
}

#[cfg(unix)]
fn from_bytes(b: Vec<u8>) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(b))
}

#[cfg(not(unix))]
fn from_bytes(b: Vec<u8>) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&b).into_owned())
}

fn escape_bytes(mut rest: &[u8]) -> String {
    let mut out = String::with_capacity(rest.len() + 8);
    let push_byte = |out: &mut String, b: u8| out.push_str(&format!("%{b:02X}"));
    while !rest.is_empty() {
        let (valid, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, 0),
            Err(e) => {
                let ok = e.valid_up_to();
                // `from_utf8` said the first `ok` bytes are valid.
                let s = std::str::from_utf8(&rest[..ok]).unwrap_or_default();
                (s, e.error_len().unwrap_or(rest.len() - ok))
            }
        };
        for c in valid.chars() {
            if c == '%' {
                push_byte(&mut out, b'%');
            } else {
                out.push(c);
            }
        }
        let at = valid.len();
        for &b in &rest[at..at + bad] {
            push_byte(&mut out, b);
        }
        rest = &rest[at + bad..];
    }
    out
}

/// The path an escaped text stands for; the reason when a `%` is not followed by two hex
/// digits.
pub fn unescape(text: &str) -> Result<PathBuf, String> {
    let b = text.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = b
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) => out.push(v),
                None => {
                    return Err(format!(
                        "escaped path: \"%\" at byte {i} is not followed by two hex digits"
                    ))
                }
            }
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Ok(from_bytes(out))
}

/// How a path is written: the plain string, or the escaped form.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr {
    Text(String),
    Escaped(EscapedForm),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EscapedForm {
    escaped: String,
}

impl Repr {
    fn of(p: &Path) -> Repr {
        match escape(p) {
            None => Repr::Text(p.to_string_lossy().into_owned()),
            Some(escaped) => Repr::Escaped(EscapedForm { escaped }),
        }
    }

    fn path(self) -> Result<PathBuf, String> {
        match self {
            Repr::Text(s) => Ok(PathBuf::from(s)),
            Repr::Escaped(e) => unescape(&e.escaped),
        }
    }
}

/// `p` as a JSON value: a string, or `{"escaped": …}`.
pub fn to_value(p: &Path) -> serde_json::Value {
    match Repr::of(p) {
        Repr::Text(s) => serde_json::Value::String(s),
        Repr::Escaped(e) => serde_json::json!({ ESCAPED_KEY: e.escaped }),
    }
}

/// The path a JSON value names, in either form; `None` for any other value, the reason for
/// a malformed escaped form.
pub fn from_value(v: &serde_json::Value) -> Option<Result<PathBuf, String>> {
    match v {
        serde_json::Value::String(s) => Some(Ok(PathBuf::from(s))),
        serde_json::Value::Object(o) if o.len() == 1 => {
            let text = o.get(ESCAPED_KEY)?.as_str()?;
            Some(unescape(text))
        }
        _ => None,
    }
}

pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    Repr::of(p).serialize(s)
}

pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
    Repr::deserialize(d)?
        .path()
        .map_err(serde::de::Error::custom)
}

/// The same for an `Option<PathBuf>` (`null` when absent).
pub mod opt {
    use super::*;

    #[allow(clippy::ref_option)] // serde's `with` hands us `&Option<_>`.
    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        p.as_deref().map(Repr::of).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Option::<Repr>::deserialize(d)?
            .map(Repr::path)
            .transpose()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct Rec {
        #[serde(with = "super")]
        p: PathBuf,
        #[serde(with = "super::opt", default)]
        q: Option<PathBuf>,
    }

    #[test]
    fn utf8_paths_stay_plain_strings_percent_and_all() {
        let r = Rec {
            p: "/data/100% caf\u{e9}/wd".into(),
            q: None,
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"p": "/data/100% caf\u{e9}/wd", "q": null})
        );
        assert_eq!(serde_json::from_value::<Rec>(v).unwrap(), r);
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_round_trip_through_the_escaped_form() {
        let bytes = b"/tmp/caf\xe9/100%/\xff\xfe\xc3(/ok\xc3\xa9".to_vec();
        let p = from_bytes(bytes.clone());
        let r = Rec {
            p: p.clone(),
            q: Some(p.clone()),
        };
        let text = serde_json::to_string(&r).unwrap();
        assert_eq!(
            text,
            r#"{"p":{"escaped":"/tmp/caf%E9/100%25/%FF%FE%C3(/ok\u00e9"},"q":{"escaped":"/tmp/caf%E9/100%25/%FF%FE%C3(/ok\u00e9"}}"#
                .replace("\\u00e9", "\u{e9}")
        );
        let back: Rec = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r);
        assert_eq!(os_bytes(&back.p), bytes);
        assert_eq!(to_value(&p), serde_json::to_value(&r).unwrap()["p"]);
        assert_eq!(from_value(&to_value(&p)).unwrap().unwrap(), p);
    }

    #[test]
    fn malformed_escapes_are_refused() {
        assert!(unescape("/a%4").is_err());
        assert!(unescape("/a%zz").is_err());
        assert!(serde_json::from_str::<Rec>(r#"{"p": {"escaped": "%G0"}}"#).is_err());
        assert!(serde_json::from_str::<Rec>(r#"{"p": {"escaped": "/a", "x": 1}}"#).is_err());
        assert!(from_value(&serde_json::json!({"other": "/a"})).is_none());
        assert!(from_value(&serde_json::json!(3)).is_none());
    }
}
