//! `va install`, `va install-test` and `va doctor` against real parts: an HTTP server on
//! 127.0.0.1 for the downloads, local git repositories as the two node packs, and a
//! `COMFYUI_DIR` with a real `python3 -m venv` venv whose pip installs tiny wheels the test
//! builds (pip runs offline: `PIP_NO_INDEX` + `PIP_FIND_LINKS`).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

// ---------------------------------------------------------------------------------------
// A small HTTP/1.1 server on an ephemeral port: one thread per connection, `Connection:
// close` on every answer.

enum Reply {
    Body(Vec<u8>),
    Json(String),
    Redirect(u16, String),
    /// Declares `declared` bytes, sends `sent`, then closes.
    Cut(usize, Vec<u8>),
    NotFound,
}

struct Server {
    port: u16,
    /// (path, User-Agent) of every request.
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Server {
    fn start(route: impl Fn(&str) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let route = Arc::new(route);
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let route = route.clone();
                let log = log.clone();
                std::thread::spawn(move || answer(stream, &*route, &log));
            }
        });
        Server { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn hits(&self) -> Vec<(String, String)> {
        self.seen.lock().unwrap().clone()
    }
}

fn answer(stream: TcpStream, route: &dyn Fn(&str) -> Reply, log: &Mutex<Vec<(String, String)>>) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut first = String::new();
    if reader.read_line(&mut first).is_err() {
        return;
    }
    let path = first.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut ua = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("user-agent") {
                ua = v.trim().to_string();
            }
        }
    }
    log.lock().unwrap().push((path.clone(), ua));
    let mut s = stream;
    let head = |status: &str, extra: &str, len: usize| {
        format!("HTTP/1.1 {status}\r\n{extra}Content-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    let _ = match route(&path) {
        Reply::Body(b) => s
            .write_all(
                head(
                    "200 OK",
                    "Content-Type: application/octet-stream\r\n",
                    b.len(),
                )
                .as_bytes(),
            )
            .and_then(|()| s.write_all(&b)),
        Reply::Json(j) => s
            .write_all(head("200 OK", "Content-Type: application/json\r\n", j.len()).as_bytes())
            .and_then(|()| s.write_all(j.as_bytes())),
        Reply::Redirect(code, to) => s.write_all(
            head(
                &format!("{code} Redirect"),
                &format!("Location: {to}\r\n"),
                0,
            )
            .as_bytes(),
        ),
        Reply::Cut(declared, sent) => s
            .write_all(head("200 OK", "", declared).as_bytes())
            .and_then(|()| s.write_all(&sent)),
        Reply::NotFound => s.write_all(head("404 Not Found", "", 0).as_bytes()),
    };
    let _ = s.flush();
    let _ = s.shutdown(std::net::Shutdown::Both);
}

/// `/r/<n>` redirects (cycling through 301, 302, 303, 307, 308, relative and absolute
/// Locations) until `/r/0`, which serves `payload`; `/cut` declares more than it sends.
fn download_server(payload: &'static [u8]) -> Server {
    Server::start(move |path| {
        if let Some(n) = path.strip_prefix("/r/").and_then(|n| n.parse::<u32>().ok()) {
            if n == 0 {
                return Reply::Body(payload.to_vec());
            }
            let code = [301, 302, 303, 307, 308][n as usize % 5];
            let to = if n % 2 == 0 {
                format!("/r/{}", n - 1)
            } else {
                format!("{}", n - 1) // relative to /r/
            };
            return Reply::Redirect(code, to);
        }
        match path {
            "/file" => Reply::Body(payload.to_vec()),
            "/cut" => Reply::Cut(payload.len() * 4, payload.to_vec()),
            _ => Reply::NotFound,
        }
    })
}

// ---------------------------------------------------------------------------------------
// Helpers

const PAYLOAD: &[u8] = b"vidax test asset: 0123456789abcdef";

fn sha256_hex(bytes: &[u8]) -> String {
    format!("{:x}", Sha256::digest(bytes))
}

/// `va` with the sandbox's state dir and none of the caller's setup variables.
fn va(sb: &Sandbox) -> assert_cmd::Command {
    let mut c = sb.va();
    for k in [
        "COMFYUI_DIR",
        "VIDAX_CONFIG",
        "VIDAX_ASSETS_CONFIG",
        "VA_INSTALL_COMFY_NODES",
        "VA_RESOURCE_DIR",
        "PIP_INDEX_URL",
        "PIP_EXTRA_INDEX_URL",
    ] {
        c.env_remove(k);
    }
    c.env("PIP_DISABLE_PIP_VERSION_CHECK", "1");
    c
}

/// Writes an assets manifest with one asset and returns its path.
fn one_asset_manifest(sb: &Sandbox, url: &str, sha: &str, allow_http: bool) -> PathBuf {
    let p = sb.join("manifest/assets.json");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    let m = json!({
        "allow_insecure_http": allow_http,
        "assets": [{"id": "blob", "url": url, "sha256": sha, "dest": "models/blob.bin"}]
    });
    std::fs::write(&p, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    p
}

fn install_no_nodes(sb: &Sandbox, manifest: &Path) -> Output {
    va(sb)
        .args(["install", "--no-comfy-nodes"])
        .env("VIDAX_ASSETS_CONFIG", manifest)
        .output()
        .unwrap()
}

fn blob_dest(sb: &Sandbox) -> PathBuf {
    sb.state_root().join("state/models/blob.bin")
}

/// Names in `dir` (none when it does not exist): no temp or partial file may be left.
fn names_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// Downloads

#[test]
fn a_redirect_chain_of_5_hops_passes_and_6_fails() {
    let srv = download_server(PAYLOAD);
    let sha = sha256_hex(PAYLOAD);

    let sb = Sandbox::new();
    let m = one_asset_manifest(&sb, &srv.url("/r/5"), &sha, true);
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(std::fs::read(blob_dest(&sb)).unwrap(), PAYLOAD);
    let hits = srv.hits();
    assert_eq!(hits.len(), 6, "5 redirects + the file: {hits:?}");
    for (path, ua) in &hits {
        assert!(
            ua.starts_with("vidax/"),
            "{path} without our User-Agent: {ua:?}"
        );
    }

    let sb = Sandbox::new();
    let m = one_asset_manifest(&sb, &srv.url("/r/6"), &sha, true);
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(22), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("DOWNLOAD_FAILED") && err.contains("more than 5 redirects"),
        "{err}"
    );
    assert!(!blob_dest(&sb).exists());
    assert_eq!(
        names_in(blob_dest(&sb).parent().unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn http_is_refused_unless_the_manifest_allows_it() {
    let srv = download_server(PAYLOAD);
    let sha = sha256_hex(PAYLOAD);
    let sb = Sandbox::new();
    let m = one_asset_manifest(&sb, &srv.url("/file"), &sha, false);
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(22), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("http:// is refused"),
        "{}",
        stderr_of(&out)
    );
    assert!(
        srv.hits().is_empty(),
        "no request may be sent: {:?}",
        srv.hits()
    );
    assert!(!blob_dest(&sb).exists());

    let m = one_asset_manifest(&sb, &srv.url("/file"), &sha, true);
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(std::fs::read(blob_dest(&sb)).unwrap(), PAYLOAD);
}

#[test]
fn a_hash_mismatch_fails_and_leaves_no_file() {
    let srv = download_server(PAYLOAD);
    let sb = Sandbox::new();
    let wrong = sha256_hex(b"something else");
    let m = one_asset_manifest(&sb, &srv.url("/file"), &wrong, true);
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(21), "{}", stderr_of(&out));
    let err = stderr_of(&out);
    assert!(
        err.contains("HASH_MISMATCH") && err.contains(&wrong),
        "{err}"
    );
    assert!(!blob_dest(&sb).exists());
    assert_eq!(
        names_in(blob_dest(&sb).parent().unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn an_existing_file_with_another_hash_fails_or_is_redownloaded() {
    let srv = download_server(PAYLOAD);
    let sb = Sandbox::new();
    let dest = blob_dest(&sb);
    std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
    std::fs::write(&dest, b"stale").unwrap();
    let m = one_asset_manifest(&sb, &srv.url("/file"), &sha256_hex(PAYLOAD), true);
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(21), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        b"stale",
        "on_hash_mismatch=fail keeps it"
    );

    let mut v = read_json(&m);
    v["assets"][0]["on_hash_mismatch"] = json!("redownload");
    std::fs::write(&m, v.to_string()).unwrap();
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(std::fs::read(&dest).unwrap(), PAYLOAD);
}

#[test]
fn an_interrupted_download_leaves_no_partial_file() {
    let srv = download_server(PAYLOAD);
    let sb = Sandbox::new();
    let m = one_asset_manifest(&sb, &srv.url("/cut"), &sha256_hex(PAYLOAD), true);
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(22), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("DOWNLOAD_FAILED"),
        "{}",
        stderr_of(&out)
    );
    assert!(!blob_dest(&sb).exists());
    assert_eq!(
        names_in(blob_dest(&sb).parent().unwrap()),
        Vec::<String>::new()
    );
}

#[test]
fn file_urls_and_relative_sources_work_and_a_second_run_changes_nothing() {
    let sb = Sandbox::new();
    let dir = sb.join("manifest");
    std::fs::create_dir_all(dir.join("weights")).unwrap();
    std::fs::write(dir.join("weights/rel.bin"), b"relative source").unwrap();
    let abs = sb.join("elsewhere/abs file.bin");
    std::fs::create_dir_all(abs.parent().unwrap()).unwrap();
    std::fs::write(&abs, b"file url source").unwrap();
    let file_url = reqwest::Url::from_file_path(&abs).unwrap().to_string();
    let m = dir.join("assets.json");
    std::fs::write(
        &m,
        json!({"assets": [
            {"id": "rel", "url": "weights/rel.bin", "sha256": sha256_hex(b"relative source"), "dest": "models/rel.bin"},
            {"id": "abs", "url": file_url, "sha256": sha256_hex(b"file url source"), "dest": "models/sub/abs.bin"},
            {"id": "opt", "url": "weights/none.bin", "sha256": sha256_hex(b""), "dest": "models/opt.bin", "on_missing": "skip"}
        ]})
        .to_string(),
    )
    .unwrap();
    let models = sb.state_root().join("state/models");

    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    assert_eq!(
        std::fs::read(models.join("rel.bin")).unwrap(),
        b"relative source"
    );
    assert_eq!(
        std::fs::read(models.join("sub/abs.bin")).unwrap(),
        b"file url source"
    );
    assert!(
        !models.join("opt.bin").exists(),
        "on_missing=skip downloads nothing"
    );
    for name in ["vidax.json", "lipsync.providers.json", "assets.json"] {
        let copied = sb.state_root().join("state/config").join(name);
        let example = root().join("config").join(name);
        assert_eq!(
            std::fs::read(copied).unwrap(),
            std::fs::read(example).unwrap(),
            "{name}"
        );
    }

    // A user's edit survives; nothing else moves.
    let edited = sb.state_root().join("state/config/vidax.json");
    std::fs::write(&edited, b"{\"port\": 9999}").unwrap();
    let out = va(&sb)
        .args(["install", "--no-comfy-nodes", "--json"])
        .env("VIDAX_ASSETS_CONFIG", &m)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).expect("one JSON document");
    assert_eq!(v["changed"], false, "{v}");
    let actions: BTreeSet<&str> = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        BTreeSet::from(["unchanged", "kept", "skipped"]),
        "{v}"
    );
    assert_eq!(std::fs::read(&edited).unwrap(), b"{\"port\": 9999}");

    let out = install_no_nodes(&sb, &m);
    assert!(
        stdout_of(&out).contains("install: nothing changed"),
        "{}",
        stdout_of(&out)
    );
}

#[test]
fn the_node_block_needs_comfyui_dir() {
    let sb = Sandbox::new();
    let out = va(&sb).arg("install").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("COMFYUI_DIR"),
        "{}",
        stderr_of(&out)
    );
    assert!(
        !sb.state_root().exists(),
        "nothing is written before the check"
    );
}

// ---------------------------------------------------------------------------------------
// Doctor and install-test on a fresh machine

fn fresh_comfy(sb: &Sandbox) -> PathBuf {
    let c = sb.join("ComfyUI");
    std::fs::create_dir_all(&c).unwrap();
    c
}

fn json_report(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("stdout is not one JSON document ({e}):\n{}", stdout_of(out)))
}

fn check<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name:?} in {report}"))
}

#[test]
fn doctor_on_a_fresh_machine_exits_20_and_lists_every_missing_part() {
    let sb = Sandbox::new();
    let comfy = fresh_comfy(&sb);
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let out = va(&sb)
        .args(["doctor", "--json", "--comfyui-url", &url])
        .env("COMFYUI_DIR", &comfy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(20), "{}", stderr_of(&out));
    let v = json_report(&out);
    assert_eq!(v["ok"], false);
    let missing: BTreeSet<&str> = v["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    for want in [
        "node ComfyUI-VideoHelperSuite",
        "node ComfyUI_wav2lip",
        "node vidax_wav2lip",
        "weight wav2lip_gan",
        "weight s3fd",
        "comfyui server",
    ] {
        assert!(missing.contains(want), "{want} not listed: {missing:?}");
        assert_eq!(check(&v, want)["status"], "fail");
    }
    assert!(check(&v, "weight s3fd")["detail"]
        .as_str()
        .unwrap()
        .contains("Wav2Lip/face_detection/detection/sfd/s3fd.pth"));
    assert_eq!(check(&v, "state dir")["status"], "warn");

    // The table says the same to a person.
    let out = va(&sb)
        .args(["doctor", "--comfyui-url", &url])
        .env("COMFYUI_DIR", &comfy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(20));
    let table = stdout_of(&out);
    assert!(table.contains("FAIL node vidax_wav2lip"), "{table}");
    assert!(table.contains("doctor: "), "{table}");

    // skip_comfyui=true in the config does what --skip-comfyui does.
    let cfg = sb.join("vidax.json");
    std::fs::write(&cfg, r#"{"skip_comfyui": true}"#).unwrap();
    let out = va(&sb)
        .args(["doctor", "--json", "--comfyui-url", &url])
        .env("COMFYUI_DIR", &comfy)
        .env("VIDAX_CONFIG", &cfg)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    assert_eq!(
        check(&json_report(&out), "comfyui server")["status"],
        "skipped"
    );
}

#[test]
fn install_test_on_a_fresh_state_dir_exits_20_and_says_what_install_would_do() {
    let sb = Sandbox::new();
    let comfy = fresh_comfy(&sb);
    let out = va(&sb)
        .args(["install-test", "--json", "--skip-comfyui"])
        .env("COMFYUI_DIR", &comfy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(20), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("UNSUPPORTED_FORMAT"),
        "{}",
        stderr_of(&out)
    );
    let v = json_report(&out);
    for name in ["vidax.json", "lipsync.providers.json", "assets.json"] {
        let c = check(&v, name);
        assert_eq!(c["status"], "fail", "{c}");
        assert!(c["action"].as_str().unwrap().starts_with("copy "), "{c}");
    }
    // --skip-comfyui skips the nodes and the server, not the assets install would fetch.
    assert_eq!(check(&v, "comfyui server")["status"], "skipped");
    for id in ["asset wav2lip_gan", "asset s3fd"] {
        let c = check(&v, id);
        assert_eq!(c["status"], "skipped", "{c}");
    }
    // Without the skip, the nodes and the weights are listed with their actions.
    let out = va(&sb)
        .args([
            "install-test",
            "--json",
            "--comfyui-url",
            "http://127.0.0.1:9",
        ])
        .env("COMFYUI_DIR", &comfy)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(20));
    let v = json_report(&out);
    let c = check(&v, "asset wav2lip_gan");
    assert_eq!(c["status"], "fail");
    assert!(
        c["action"].as_str().unwrap().contains(
            "https://huggingface.co/camenduru/Wav2Lip/resolve/main/checkpoints/wav2lip_gan.pth"
        ),
        "{c}"
    );
    let c = check(&v, "node ComfyUI_wav2lip");
    assert!(
        c["action"].as_str().unwrap().starts_with("git clone "),
        "{c}"
    );
    assert!(check(&v, "node vidax_wav2lip")["action"]
        .as_str()
        .unwrap()
        .contains("comfy_nodes/vidax_wav2lip"));
    // Nothing was created.
    assert!(!sb.state_root().exists());
    assert!(!comfy.join("custom_nodes").exists());
}

// ---------------------------------------------------------------------------------------
// The full install: local git packs, a real venv, offline pip

/// Tiny wheels for every package the install asks pip for (the packs' requirements,
/// vidax_wav2lip's, imageio-ffmpeg, soundfile), built with the standard library's zipfile.
fn build_wheels(dir: &Path, dists: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"
import sys, zipfile, os
out = sys.argv[1]
for dist in sys.argv[2:]:
    norm = dist.replace("-", "_")
    name = f"{norm}-99.0"
    with zipfile.ZipFile(os.path.join(out, f"{name}-py3-none-any.whl"), "w") as z:
        z.writestr(f"{norm}.py", f"VERSION = '99.0'  # test stand-in for {dist}\n")
        z.writestr(f"{name}.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {dist}\nVersion: 99.0\n")
        z.writestr(f"{name}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: vidax-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{name}.dist-info/RECORD", f"{norm}.py,,\n{name}.dist-info/METADATA,,\n{name}.dist-info/WHEEL,,\n{name}.dist-info/RECORD,,\n")
"#;
    let st = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(dir)
        .args(dists)
        .status()
        .unwrap();
    assert!(st.success());
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", stderr_of(&out));
}

/// A git repository at `dir` with `files` committed.
fn git_pack(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", "pack"]);
}

struct Machine {
    sb: Sandbox,
    comfy: PathBuf,
    manifest: PathBuf,
    wheels: PathBuf,
    gan: Vec<u8>,
    s3fd: Vec<u8>,
}

/// A fresh workstation: ComfyUI with a venv, the two packs as local repositories (one named
/// relative to the manifest, one by file:// URL), the weights as local files (one relative,
/// one file:// under its upstream name), and a wheel folder.
fn machine(wav2lip_requirements: &str) -> Machine {
    let sb = Sandbox::new();
    let comfy = fresh_comfy(&sb);
    let st = Command::new("python3")
        .args(["-m", "venv"])
        .arg(comfy.join("venv"))
        .status()
        .unwrap();
    assert!(st.success(), "python3 -m venv");
    let mirror = sb.join("mirror");
    git_pack(
        &mirror.join("packs/ComfyUI-VideoHelperSuite"),
        &[
            ("__init__.py", "NODE_CLASS_MAPPINGS = {}\n"),
            ("requirements.txt", "vhs-dep\n"),
        ],
    );
    git_pack(
        &sb.join("remote/ComfyUI_wav2lip"),
        &[
            ("__init__.py", "NODE_CLASS_MAPPINGS = {}\n"),
            ("requirements.txt", wav2lip_requirements),
            ("Wav2Lip/audio.py", "# mel code\n"),
        ],
    );
    let gan = b"fake wav2lip gan weights".to_vec();
    let s3fd = b"fake s3fd weights".to_vec();
    std::fs::create_dir_all(mirror.join("weights")).unwrap();
    std::fs::write(mirror.join("weights/wav2lip_gan.pth"), &gan).unwrap();
    std::fs::write(mirror.join("weights/s3fd-619a316812.pth"), &s3fd).unwrap();
    let s3fd_url =
        reqwest::Url::from_file_path(mirror.join("weights/s3fd-619a316812.pth")).unwrap();
    let wav2lip_url = reqwest::Url::from_file_path(sb.join("remote/ComfyUI_wav2lip")).unwrap();
    let manifest = mirror.join("assets.json");
    std::fs::write(
        &manifest,
        json!({
            "allow_insecure_http": false,
            "assets": [
                {"id": "wav2lip_gan", "url": "weights/wav2lip_gan.pth", "sha256": sha256_hex(&gan),
                 "dest": "comfyui:custom_nodes/ComfyUI_wav2lip/Wav2Lip/checkpoints/wav2lip_gan.pth"},
                {"id": "s3fd", "url": s3fd_url.to_string(), "sha256": sha256_hex(&s3fd),
                 "dest": "comfyui:custom_nodes/ComfyUI_wav2lip/Wav2Lip/face_detection/detection/sfd/s3fd.pth"}
            ],
            "custom_nodes": [
                {"name": "ComfyUI-VideoHelperSuite", "git": "packs/ComfyUI-VideoHelperSuite"},
                {"name": "ComfyUI_wav2lip", "git": wav2lip_url.to_string()}
            ]
        })
        .to_string(),
    )
    .unwrap();
    let wheels = sb.join("wheels");
    build_wheels(
        &wheels,
        &[
            "vhs-dep",
            "w2l-dep",
            "numpy",
            "scipy",
            "soundfile",
            "imageio-ffmpeg",
        ],
    );
    Machine {
        sb,
        comfy,
        manifest,
        wheels,
        gan,
        s3fd,
    }
}

impl Machine {
    fn va(&self) -> assert_cmd::Command {
        let mut c = va(&self.sb);
        c.env("COMFYUI_DIR", &self.comfy)
            .env("VIDAX_ASSETS_CONFIG", &self.manifest)
            .env("PIP_NO_INDEX", "1")
            .env("PIP_FIND_LINKS", &self.wheels);
        c
    }

    fn custom_nodes(&self) -> PathBuf {
        self.comfy.join("custom_nodes")
    }
}

/// Every file under `dir`, relative, without git's own folder and Python caches.
fn tree(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == ".git" || name == "__pycache__" || name == ".pytest_cache" {
                continue;
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                out.insert(
                    e.path()
                        .strip_prefix(dir)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out
}

fn head(dir: &Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn mtimes(paths: &[PathBuf]) -> Vec<std::time::SystemTime> {
    paths
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().modified().unwrap())
        .collect()
}

/// A ComfyUI stand-in: `/system_stats`, `/object_info`, and `/object_info/VIDAX_Wav2Lip`
/// with or without the node.
fn fake_comfyui(has_node: bool) -> Server {
    Server::start(move |path| match path {
        "/system_stats" => Reply::Json(
            json!({"system": {"comfyui_version": "0.3.64", "python_version": "3.11"},
                   "devices": [{"name": "cpu", "type": "cpu"}]})
            .to_string(),
        ),
        "/object_info" => Reply::Json("{}".into()),
        "/object_info/VIDAX_Wav2Lip" if has_node => {
            Reply::Json(json!({"VIDAX_Wav2Lip": {"name": "VIDAX_Wav2Lip"}}).to_string())
        }
        "/object_info/VIDAX_Wav2Lip" => Reply::Json("{}".into()),
        _ => Reply::NotFound,
    })
}

#[test]
fn install_lays_out_comfyui_exactly_and_a_second_run_is_a_no_op() {
    let m = machine("w2l-dep\ntorch>=2.0\ntorchaudio\npathlib\n");
    let out = m.va().arg("install").output().unwrap();
    let stdout = stdout_of(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", stderr_of(&out));
    let vidax_target = m.custom_nodes().join("vidax_wav2lip");
    assert!(
        stdout.contains(&format!(
            "installed custom node vidax_wav2lip -> {}",
            vidax_target.display()
        )),
        "{stdout}"
    );
    assert!(stdout.contains("restart ComfyUI"), "{stdout}");

    // The layout of SPEC §8, file for file.
    let mut want: BTreeSet<String> = [
        "ComfyUI-VideoHelperSuite/__init__.py",
        "ComfyUI-VideoHelperSuite/requirements.txt",
        "ComfyUI_wav2lip/__init__.py",
        "ComfyUI_wav2lip/requirements.txt",
        "ComfyUI_wav2lip/Wav2Lip/audio.py",
        "ComfyUI_wav2lip/Wav2Lip/checkpoints/wav2lip_gan.pth",
        "ComfyUI_wav2lip/Wav2Lip/face_detection/detection/sfd/s3fd.pth",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let source = root().join("comfy_nodes/vidax_wav2lip");
    for f in tree(&source) {
        want.insert(format!("vidax_wav2lip/{f}"));
    }
    assert_eq!(tree(&m.custom_nodes()), want);
    for f in tree(&source) {
        assert_eq!(
            std::fs::read(vidax_target.join(&f)).unwrap(),
            std::fs::read(source.join(&f)).unwrap(),
            "{f}"
        );
    }
    let w = m.custom_nodes().join("ComfyUI_wav2lip/Wav2Lip");
    assert_eq!(
        std::fs::read(w.join("checkpoints/wav2lip_gan.pth")).unwrap(),
        m.gan
    );
    assert_eq!(
        std::fs::read(w.join("face_detection/detection/sfd/s3fd.pth")).unwrap(),
        m.s3fd
    );
    let config: BTreeSet<String> = tree(&m.sb.state_root().join("state/config"));
    assert_eq!(
        config,
        ["assets.json", "lipsync.providers.json", "vidax.json"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );

    // pip ran with ComfyUI's venv: the packs' requirements (torch and pathlib left out),
    // vidax_wav2lip's, imageio-ffmpeg and soundfile.
    let py = m.comfy.join("venv/bin/python");
    let st = Command::new(&py)
        .args([
            "-c",
            "import vhs_dep, w2l_dep, numpy, scipy, soundfile, imageio_ffmpeg",
        ])
        .status()
        .unwrap();
    assert!(st.success(), "the venv lacks an installed package");

    // The machine now passes the doctor: without ComfyUI, and against a running one.
    let out = m.va().args(["doctor", "--skip-comfyui"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    let srv = fake_comfyui(true);
    let out = m
        .va()
        .args(["doctor", "--json", "--comfyui-url", &srv.url("")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
    let v = json_report(&out);
    assert_eq!(check(&v, "python module torchcodec")["status"], "warn");
    assert_eq!(check(&v, "weight wav2lip_gan")["status"], "ok");
    let stale = fake_comfyui(false);
    let out = m
        .va()
        .args(["doctor", "--comfyui-url", &stale.url("")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(20));
    assert!(
        stdout_of(&out).contains("hint: the running ComfyUI")
            && stdout_of(&out).contains("restart ComfyUI"),
        "{}",
        stdout_of(&out)
    );
    let out = m
        .va()
        .args(["install-test", "--comfyui-url", &srv.url("")])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));

    // The second run changes nothing and says so.
    let watched = vec![
        w.join("checkpoints/wav2lip_gan.pth"),
        w.join("face_detection/detection/sfd/s3fd.pth"),
        vidax_target.join("__init__.py"),
        m.sb.state_root().join("state/config/vidax.json"),
    ];
    let before = mtimes(&watched);
    let heads = [
        head(&m.custom_nodes().join("ComfyUI-VideoHelperSuite")),
        head(&m.custom_nodes().join("ComfyUI_wav2lip")),
    ];
    let tree_before = tree(&m.custom_nodes());
    let out = m.va().args(["install", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v = json_report(&out);
    assert_eq!(v["changed"], false, "{v}");
    for s in v["steps"].as_array().unwrap() {
        assert_eq!(s["action"], "unchanged", "{s}");
    }
    assert_eq!(mtimes(&watched), before);
    assert_eq!(tree(&m.custom_nodes()), tree_before);
    assert_eq!(
        [
            head(&m.custom_nodes().join("ComfyUI-VideoHelperSuite")),
            head(&m.custom_nodes().join("ComfyUI_wav2lip")),
        ],
        heads
    );
    let out = m.va().arg("install").output().unwrap();
    assert!(
        stdout_of(&out).contains("install: nothing changed"),
        "{}",
        stdout_of(&out)
    );
    assert!(!stdout_of(&out).contains("restart ComfyUI"));

    // A new commit upstream is pulled on the next run.
    let upstream = m.sb.join("mirror/packs/ComfyUI-VideoHelperSuite");
    std::fs::write(upstream.join("nodes.py"), "# new\n").unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-q", "-m", "update"]);
    let out = m.va().args(["install", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v = json_report(&out);
    let step = v["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "ComfyUI-VideoHelperSuite")
        .unwrap();
    assert_eq!(step["action"], "updated", "{step}");
    assert!(m
        .custom_nodes()
        .join("ComfyUI-VideoHelperSuite/nodes.py")
        .is_file());
}

#[test]
fn a_failing_requirements_txt_ends_in_python_dependency_failed() {
    let m = machine("w2l-dep\nvidax-no-such-package==1.0\n");
    let out = m.va().arg("install").output().unwrap();
    assert_eq!(out.status.code(), Some(23), "{}", stdout_of(&out));
    let err = stderr_of(&out);
    let py = m.comfy.join("venv/bin/python");
    assert!(err.contains("PYTHON_DEPENDENCY_FAILED"), "{err}");
    assert!(err.contains("repo ComfyUI_wav2lip"), "{err}");
    assert!(err.contains(&py.display().to_string()), "{err}");
    assert!(err.contains("vidax-no-such-package"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("error:")).count(), 1);
}

#[test]
fn a_pack_target_that_leads_outside_custom_nodes_is_refused() {
    let m = machine("w2l-dep\n");
    let outside = m.sb.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(m.custom_nodes()).unwrap();
    std::os::unix::fs::symlink(&outside, m.custom_nodes().join("ComfyUI_wav2lip")).unwrap();
    let out = m.va().arg("install").output().unwrap();
    assert_eq!(out.status.code(), Some(23), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("outside"), "{}", stderr_of(&out));
    assert!(names_in(&outside).is_empty(), "nothing written outside");

    // A name with a path in it is refused when the manifest is read.
    let mut v = read_json(&m.manifest);
    v["custom_nodes"][0]["name"] = json!("../escape");
    std::fs::write(&m.manifest, v.to_string()).unwrap();
    let out = m.va().arg("install").output().unwrap();
    assert_eq!(out.status.code(), Some(10), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("custom_nodes[0].name"),
        "{}",
        stderr_of(&out)
    );
    assert!(!m.comfy.join("escape").exists());
}

#[test]
fn a_second_install_at_the_same_time_is_refused() {
    use fs4::fs_std::FileExt;
    let sb = Sandbox::new();
    let state = sb.state_root().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let lock = std::fs::File::create(state.join("install.lock")).unwrap();
    assert!(FileExt::try_lock_exclusive(&lock).unwrap());
    let dir = sb.join("manifest");
    std::fs::create_dir_all(&dir).unwrap();
    let m = dir.join("assets.json");
    std::fs::write(&m, r#"{"assets": []}"#).unwrap();
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(70), "{}", stderr_of(&out));
    assert!(
        stderr_of(&out).contains("another va install is running"),
        "{}",
        stderr_of(&out)
    );
    assert!(!state.join("config/vidax.json").exists(), "nothing copied");
    FileExt::unlock(&lock).unwrap();
    let out = install_no_nodes(&sb, &m);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
}
