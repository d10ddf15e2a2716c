//! Issue 15: the command line as its users expect — help (golden, in docs/CLI.md), shell
//! completions and the man page, hints that name real flags, flags as people type them,
//! machine output (`--json`), the terminal's bar and summary (in a pty), `va verify`'s
//! verdicts, `va status`'s order and `va logs --follow`'s end.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const CLI_MD: &str = "docs/CLI.md";

/// The commands whose `--help` docs/CLI.md shows ("" is `va --help`).
const HELP_PAGES: &[&str] = &[
    "",
    "validate",
    "run",
    "produce",
    "status",
    "logs",
    "verify",
    "doctor",
    "install-test",
    "install",
    "bench",
    "serve",
    "completions",
    "man",
];

fn help_text(page: &str) -> String {
    let mut cmd = assert_cmd::Command::cargo_bin("va").unwrap();
    cmd.env_remove("COMFYUI_URL");
    if !page.is_empty() {
        cmd.arg(page);
    }
    let out = cmd.arg("--help").output().unwrap();
    assert!(out.status.success(), "va {page} --help");
    stdout_of(&out).trim_end().to_string()
}

/// The help blocks of docs/CLI.md: ```` ```text ```` blocks after `<!-- help: PAGE -->`.
fn documented_help(doc: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = doc;
    while let Some(i) = rest.find("<!-- help: ") {
        let after = &rest[i + "<!-- help: ".len()..];
        let end = after.find(" -->").expect("closed marker");
        let page = after[..end].trim().to_string();
        let block = &after[end..];
        let start = block
            .find("```text\n")
            .expect("a text block after the marker")
            + 8;
        let stop = block[start..].find("\n```").expect("closed block") + start;
        out.push((page, block[start..stop].to_string()));
        rest = &block[stop..];
    }
    out
}

/// `va … --help` is the golden text in docs/CLI.md, for every command (set VA_BLESS=1 to
/// rewrite the doc's blocks from the binary after a deliberate change).
#[test]
fn help_matches_the_golden_pages_in_docs_cli_md() {
    let path = root().join(CLI_MD);
    let doc = std::fs::read_to_string(&path).unwrap();
    if std::env::var_os("VA_BLESS").is_some() {
        let mut text = doc.clone();
        for (page, old) in documented_help(&doc) {
            text = text.replacen(
                &format!("<!-- help: {page} -->\n```text\n{old}\n```"),
                &format!("<!-- help: {page} -->\n```text\n{}\n```", help_text(&page)),
                1,
            );
        }
        std::fs::write(&path, text).unwrap();
        return;
    }
    let documented = documented_help(&doc);
    let pages: Vec<&str> = documented.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(pages, HELP_PAGES, "docs/CLI.md shows these help pages");
    for (page, text) in &documented {
        assert_eq!(
            &help_text(page),
            text,
            "`va {page} --help` differs from docs/CLI.md (VA_BLESS=1 rewrites the doc)"
        );
    }
}

/// Every visible subcommand has a help page in docs/CLI.md and a line in README's "Using va",
/// and every flag README and docs/CLI.md show after `va <command>` exists on that command.
#[test]
fn readme_and_docs_name_only_commands_and_flags_that_exist() {
    let cmd = vidax::cli::command();
    let subs: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
        .map(|s| s.get_name().to_string())
        .collect();
    let doc = std::fs::read_to_string(root().join(CLI_MD)).unwrap();
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let using = readme
        .split_once("## Using va")
        .map(|(_, r)| r.split("\n## ").next().unwrap_or(r))
        .expect("README has a \"Using va\" section");
    for s in &subs {
        assert!(
            HELP_PAGES.contains(&s.as_str()),
            "va {s} has no help page in docs/CLI.md"
        );
        assert!(
            using.contains(&format!("va {s}")),
            "README's \"Using va\" does not show va {s}"
        );
    }
    let mut checked = 0;
    for text in [using, doc.as_str()] {
        for line in text.lines() {
            let Some(i) = line.find("va ") else { continue };
            let words: Vec<&str> = line[i + 3..].split_whitespace().collect();
            let Some(sub) = words.first().filter(|w| subs.contains(&w.to_string())) else {
                continue;
            };
            let c = cmd.find_subcommand(sub).unwrap();
            for w in words.iter().skip(1) {
                if w.starts_with('#') || w.starts_with('|') {
                    break;
                }
                let Some(flag) = w.strip_prefix("--") else {
                    continue;
                };
                let flag = flag.split(['=', '`', ')', ',']).next().unwrap_or(flag);
                if flag == "help" || flag.is_empty() {
                    continue;
                }
                assert!(
                    c.get_arguments().any(|a| a.get_long() == Some(flag)),
                    "`{line}` names --{flag}, which va {sub} does not have"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 15, "only {checked} flags found in README/docs");
}

/// Every visible flag and argument of every command says what it is.
#[test]
fn every_flag_has_help_text() {
    let cmd = vidax::cli::command();
    let mut missing = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        for a in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            if a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("va {} {}", sub.get_name(), a.get_id()));
            }
        }
    }
    assert!(missing.is_empty(), "flags without help: {missing:?}");
}

#[test]
fn completions_are_generated_for_every_shell() {
    let sb = Sandbox::new();
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef va"),
        ("fish", "complete -c va"),
        ("powershell", "Register-ArgumentCompleter"),
    ] {
        let out = sb.va().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", stderr_of(&out));
        let text = stdout_of(&out);
        assert!(text.contains(marker), "{shell} completions lack {marker:?}");
        for word in ["produce", "loudness", "no-comfyui"] {
            assert!(text.contains(word), "{shell} completions lack {word}");
        }
    }
    let out = sb.va().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}

#[test]
fn man_page_is_roff_with_every_command() {
    let sb = Sandbox::new();
    let out = sb.va().arg("man").output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let text = stdout_of(&out);
    assert!(
        text.starts_with(".ie") || text.contains(".TH va"),
        "{}",
        &text[..200.min(text.len())]
    );
    for word in ["produce", "verify", "VA_STATE_DIR"] {
        assert!(text.contains(word), "man page lacks {word}");
    }
}

/// String literals of `src/` that read an environment variable: `env::var("X")`,
/// `env::var_os("X")`, `try_from_env("X")`.
fn env_vars_read_by_the_code() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in rust_files(&root().join("src")) {
        let text = std::fs::read_to_string(&file).unwrap();
        for pat in ["env::var(\"", "env::var_os(\"", "try_from_env(\""] {
            for (i, _) in text.match_indices(pat) {
                let rest = &text[i + pat.len()..];
                if let Some(end) = rest.find('"') {
                    names.insert(rest[..end].to_string());
                }
            }
        }
    }
    names
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(rust_files(&p));
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
    out
}

#[test]
fn every_environment_variable_the_code_reads_is_in_the_help() {
    let help = help_text("");
    let names = env_vars_read_by_the_code();
    assert!(
        names.contains("VA_STATE_DIR") && names.contains("COMFYUI_URL"),
        "{names:?}"
    );
    for name in names {
        // The system's own, and the test harness's.
        if ["HOME", "PATH", "USERPROFILE"].contains(&name.as_str()) || name.contains("TEST") {
            continue;
        }
        assert!(help.contains(&name), "`va --help` does not explain {name}");
    }
    // Flags backed by a variable show it.
    assert!(help_text("produce").contains("[env: COMFYUI_URL"));
}

/// Every `--flag` a hint or suggested action names exists: on the command a hint names
/// (`va doctor --json`), else on the commands that can raise it (install hints on install /
/// install-test / doctor, the server's on serve, everything else on `va run`).
#[test]
fn every_hint_names_a_flag_that_exists() {
    let cmd = vidax::cli::command();
    let flags_of = |sub: &str| -> BTreeSet<String> {
        cmd.find_subcommand(sub)
            .map(|c| {
                c.get_arguments()
                    .filter_map(|a| a.get_long().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let src = root().join("src");
    let mut checked = 0;
    for file in rust_files(&src) {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        let text = std::fs::read_to_string(&file).unwrap();
        for (i, _) in text
            .match_indices(".with_hint(")
            .chain(text.match_indices(".with_action("))
        {
            // The call's text up to its closing parenthesis.
            let mut depth = 0;
            let mut end = i;
            for (k, c) in text[i..].char_indices() {
                match c {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = i + k;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let call = &text[i..end];
            let words: Vec<&str> = call
                .split(|c: char| c.is_whitespace() || c == '"' || c == '(' || c == ')')
                .filter(|w| !w.is_empty())
                .collect();
            for (k, w) in words.iter().enumerate() {
                let Some(flag) = w.strip_prefix("--") else {
                    continue;
                };
                // `va <command>` just before the flag names its command.
                let named = (k.saturating_sub(5)..k)
                    .rev()
                    .find(|&j| words[j] == "va" && j + 1 < k)
                    .map(|j| words[j + 1].to_string());
                let commands: Vec<String> = match &named {
                    Some(sub) => vec![sub.clone()],
                    None if rel.starts_with("install/") => {
                        vec!["install".into(), "install-test".into(), "doctor".into()]
                    }
                    None if rel.starts_with("api/") || rel == "cli/serve.rs" => {
                        vec!["serve".into()]
                    }
                    None => vec!["run".into()],
                };
                let known: BTreeSet<String> = commands.iter().flat_map(|c| flags_of(c)).collect();
                let flag: String = flag
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                    .collect();
                // Every command has --help (clap's own).
                if flag.is_empty() || flag == "help" {
                    continue;
                }
                assert!(
                    known.contains(&flag),
                    "src/{rel}: a hint names --{flag}, which va {} lacks: {call}",
                    commands.join("/")
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 5, "only {checked} hint flags found");
}

// ---- flags as users type them ------------------------------------------------------------

fn inputs(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let audio = sb.join("voice.wav");
    if !audio.exists() {
        write_wav(&audio, 16_000, 1, 16_000);
    }
    let img = sb.join("face.png");
    if !img.exists() {
        write_face_png(&img, 64, 48);
    }
    (audio, img)
}

fn produce_with(sb: &Sandbox, args: &[&str]) -> std::process::Output {
    let (audio, img) = inputs(sb);
    sb.va()
        .args(["produce", "--no-comfyui", "--audio"])
        .arg(&audio)
        .arg("--start")
        .arg(&img)
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn produce_flag_values_are_judged_and_named_by_their_flags() {
    let sb = Sandbox::new();
    for (args, code, want) in [
        (&["--pre", "-1"][..], 10, "--pre: must be >= 0 (got -1"),
        (&["--post", "-0.5"][..], 10, "--post: must be >= 0"),
        (&["--pre", "0,5"][..], 2, "use a dot: 0.5"),
        (&["--loudness", "-16,5"][..], 2, "use a dot: -16.5"),
        (&["--fps", "29,97"][..], 2, "--fps: use a dot: 29.97"),
        (&["--fps", "abc"][..], 10, "--fps: not a frame rate"),
        (
            &["--width", "640"][..],
            10,
            "--height: must be given together with --width",
        ),
        (
            &["--width", "-4", "--height", "480"][..],
            10,
            "--width: must be >= 2 (got -4)",
        ),
        (&["--seed", "-3"][..], 10, "--seed: must be >= 0 (got -3)"),
        (&["--lipsync", "maybe"][..], 2, "--lipsync"),
        (&["--loudness", "-99"][..], 10, "--loudness: must be >= -50"),
    ] {
        let out = produce_with(&sb, args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: wanted {want:?} in:\n{err}");
        assert!(
            !err.contains("render.") && !err.contains("buffer."),
            "{args:?}: {err}"
        );
    }
    // Nothing was written for any of them.
    assert!(!sb.join("workdir").exists());
}

#[test]
fn a_workdir_that_is_a_file_is_a_usage_error() {
    let sb = Sandbox::new();
    let file = sb.join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = produce_with(&sb, &["--workdir", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("USAGE"), "{}", stderr_of(&out));
    let (audio, img) = inputs(&sb);
    let job = sb.write_job(
        "job.json",
        &json!({"audio": audio, "start_image": img, "determinism": {"seed": 1},
                "comfyui": {"enable": false}}),
    );
    let out = sb
        .va()
        .arg("run")
        .arg(&job)
        .arg("--workdir")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert_eq!(std::fs::read(&file).unwrap(), b"x");
}

// ---- one run id ----------------------------------------------------------------------------

#[test]
fn the_default_workdir_is_named_after_the_run_id() {
    let sb = Sandbox::new();
    let (audio, img) = inputs(&sb);
    let job = sb.write_job(
        "job.json",
        &json!({"audio": audio, "start_image": img, "determinism": {"seed": 1}}),
    );
    // The job enables ComfyUI; --no-comfyui runs it on the diagnostic path.
    let out = sb
        .va()
        .arg("run")
        .arg(&job)
        .arg("--no-comfyui")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    let dirs: Vec<PathBuf> = std::fs::read_dir(sb.join("workdir"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let m = read_json(&dirs[0].join("manifest.json"));
    assert_eq!(
        dirs[0].file_name().unwrap().to_str().unwrap(),
        m["run_id"].as_str().unwrap(),
        "workdir/<run id>"
    );
    assert_eq!(m["phases"]["comfyui"]["status"], "skipped");
    assert_eq!(m["effective_params"]["comfyui"]["enable"], false);
    // `va logs <run id>` finds it.
    let out = sb
        .va()
        .args(["logs", m["run_id"].as_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
}

// ---- machine output -----------------------------------------------------------------------

fn ndjson(out: &std::process::Output) -> Vec<Value> {
    stdout_of(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect()
}

#[test]
fn produce_json_is_ndjson_from_start_to_summary() {
    let sb = Sandbox::new();
    let wd = sb.join("wd");
    let out = produce_with(
        &sb,
        &["--json", "--fps", "25", "--workdir", wd.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let lines = ndjson(&out);
    let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
    assert_eq!(events.first(), Some(&"started"), "{events:?}");
    assert_eq!(events.last(), Some(&"done"), "{events:?}");
    let m = read_json(&wd.join("manifest.json"));
    assert_eq!(lines[0]["run_id"], m["run_id"]);
    assert_eq!(PathBuf::from(lines[0]["workdir"].as_str().unwrap()), wd);
    // Every phase reports, in pipeline order.
    let phases: Vec<(String, String)> = lines
        .iter()
        .filter(|l| l["event"] == "phase")
        .map(|l| {
            (
                l["phase"].as_str().unwrap().into(),
                l["status"].as_str().unwrap().into(),
            )
        })
        .collect();
    for (p, s) in [
        ("prepare", "started"),
        ("prepare", "completed"),
        ("comfyui", "skipped"),
        ("encode", "started"),
        ("encode", "completed"),
        ("finalize", "completed"),
    ] {
        assert!(
            phases.contains(&(p.into(), s.into())),
            "{p} {s} missing: {phases:?}"
        );
    }
    // Encode progress: rising, video and audio counted, 1 only at the end.
    let prog: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "progress" && l["phase"] == "encode")
        .collect();
    assert!(!prog.is_empty());
    let fr: Vec<f64> = prog
        .iter()
        .map(|l| l["fraction"].as_f64().unwrap())
        .collect();
    assert!(fr.windows(2).all(|w| w[0] <= w[1]), "{fr:?}");
    assert_eq!(fr.last(), Some(&1.0));
    assert!(fr[..fr.len() - 1].iter().all(|&f| f < 1.0), "{fr:?}");
    let last = prog.last().unwrap();
    assert_eq!(last["done"], 25);
    assert_eq!(last["audio_samples_done"], last["audio_samples_total"]);
    assert_eq!(last["audio_samples_total"], 48_000);
    let done = lines.last().unwrap();
    assert_eq!(done["frames"], 25);
    assert_eq!(done["width"], 64);
    assert_eq!(done["degraded"], false);
    assert_eq!(done["exit_status"], 0);
    assert_eq!(
        PathBuf::from(done["final"].as_str().unwrap()),
        wd.join("fertig.mp4")
    );
    assert!(done["bytes"].as_u64().unwrap() > 1000);
}

#[test]
fn run_json_reports_an_error_with_its_code() {
    let sb = Sandbox::new();
    let job = sb.write_job(
        "job.json",
        // A field the schema does not know: refused at validation, before any file is read
        // (a missing seed no longer is: seeds are optional since issue 11).
        &json!({"audio": "missing.wav", "start_image": "x.png", "fps": 25}),
    );
    let out = sb.va().args(["run", "--json"]).arg(&job).output().unwrap();
    assert_eq!(out.status.code(), Some(10));
    let lines = ndjson(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["event"], "error");
    assert_eq!(lines[0]["code"], "VALIDATION_FAILED");
    assert_eq!(lines[0]["exit_status"], 10);
}

#[test]
fn validate_json_has_one_shape() {
    let sb = Sandbox::new();
    let good = sb.write_job(
        "good.json",
        &json!({"audio": "a.wav", "start_image": "i.png", "determinism": {"seed": 1}}),
    );
    let bad = sb.write_job(
        "bad.json",
        &json!({"audio": "a.wav", "start_image": "i.png", "encode": {"crf": 99}}),
    );
    let syntax = sb.join("syntax.json");
    std::fs::write(&syntax, "{").unwrap();
    for (file, valid, code) in [(&good, true, 0), (&bad, false, 10), (&syntax, false, 10)] {
        let out = sb
            .va()
            .args(["validate", "--json"])
            .arg(file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(code), "{}", stderr_of(&out));
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["file", "valid", "problems", "job"], "{v}");
        assert_eq!(v["valid"], valid);
        assert_eq!(v["problems"].as_array().unwrap().is_empty(), valid, "{v}");
        assert_eq!(v["job"].is_object(), valid, "{v}");
    }
}

// ---- va verify -------------------------------------------------------------------------------

#[test]
fn verify_fails_on_a_picture_and_on_a_file_without_sound() {
    let sb = Sandbox::new();
    let png = sb.join("face.png");
    write_face_png(&png, 64, 48);
    let out = sb.va().arg("verify").arg(&png).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    assert!(
        stdout_of(&out).contains("no video stream"),
        "{}",
        stdout_of(&out)
    );
    assert!(!stdout_of(&out).contains("\nok"), "{}", stdout_of(&out));

    let mp4 = sb.join("silent.mp4");
    let made = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=64x48:rate=25",
            "-t",
            "1",
        ])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p", "-an"])
        .arg(&mp4)
        .status()
        .unwrap();
    assert!(made.success());
    let out = sb.va().arg("verify").arg(&mp4).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stdout_of(&out));
    assert!(
        stdout_of(&out).contains("no audio stream"),
        "{}",
        stdout_of(&out)
    );
    let out = sb
        .va()
        .args(["verify", "--allow-no-audio"])
        .arg(&mp4)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stdout_of(&out));
}

// ---- va status / va logs ---------------------------------------------------------------------

fn quick_job(sb: &Sandbox, name: &str) -> PathBuf {
    let (audio, img) = inputs(sb);
    sb.write_job(
        name,
        &json!({"audio": audio, "start_image": img, "determinism": {"seed": 1},
                "comfyui": {"enable": false}}),
    )
}

#[test]
fn status_lists_newest_first_with_a_limit() {
    let sb = Sandbox::new();
    let job = quick_job(&sb, "job.json");
    let mut ids = Vec::new();
    for k in 0..3 {
        let (_, m) = sb.run_ok(&job, &sb.join(&format!("wd{k}")));
        ids.push(m["run_id"].as_str().unwrap().to_string());
    }
    let out = sb.va().args(["status", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    let newest_first: Vec<&str> = ids.iter().rev().map(String::as_str).collect();
    assert_eq!(got, newest_first);
    let out = sb
        .va()
        .args(["status", "--json", "--limit", "2"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 2);
    assert_eq!(v[0]["id"], ids[2].as_str());
    let out = sb.va().args(["status", "--limit", "1"]).output().unwrap();
    let text = stdout_of(&out);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains(&ids[2]), "{text}");
}

#[test]
fn logs_follow_waits_for_the_run_and_ends_with_it() {
    let sb = Sandbox::new();
    let job = quick_job(&sb, "job.json");
    let wd = sb.join("later");
    // Follow a workdir no run has used yet.
    let follower = std::process::Command::new(assert_cmd::cargo::cargo_bin("va"))
        .env("VA_STATE_DIR", sb.state_root())
        .current_dir(sb.path())
        .args(["logs", "--follow", "--json", "--wait", "60"])
        .arg(&wd)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    sb.run_ok(&job, &wd);
    let t = Instant::now();
    let out = follower.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr_of(&out));
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "follow did not end with the run"
    );
    let lines = stdout_of(&out);
    assert!(
        lines.contains("final written"),
        "the run's last event was printed:\n{lines}"
    );
    // A finished run: --follow prints and ends at once.
    let t = Instant::now();
    let out = sb
        .va()
        .args(["logs", "--follow"])
        .arg(&wd)
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(t.elapsed() < Duration::from_secs(5));
    // A run that never starts: the wait ends with an error.
    let out = sb
        .va()
        .args(["logs", "--follow", "--wait", "1", "no-such-run"])
        .timeout(Duration::from_secs(20))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(11), "{}", stderr_of(&out));
}

// ---- the terminal ----------------------------------------------------------------------------

/// Runs `va ARGS` in a pseudo-terminal (util-linux `script`) and returns what it showed.
fn in_pty(sb: &Sandbox, args: &str) -> String {
    let va = assert_cmd::cargo::cargo_bin("va");
    let out = std::process::Command::new("script")
        .args(["-qefc", &format!("{} {args}", va.display()), "/dev/null"])
        .env("VA_STATE_DIR", sb.state_root())
        .env("COLUMNS", "120")
        .current_dir(sb.path())
        .output()
        .expect("script (util-linux) runs a command in a pty");
    assert!(
        out.status.success(),
        "va {args} in a pty: {}",
        stdout_of(&out)
    );
    stdout_of(&out)
}

#[test]
fn a_terminal_gets_one_bar_to_100_percent_and_a_summary() {
    let sb = Sandbox::new();
    let job = quick_job(&sb, "job.json");
    let shown = in_pty(&sb, &format!("run {} --workdir wd", job.display()));
    assert!(shown.contains("encode"), "{shown}");
    assert!(shown.contains("100%"), "the bar ends at 100 %:\n{shown}");
    assert!(shown.contains("25 frames, audio muxed"), "{shown}");
    let summary = shown
        .lines()
        .find(|l| l.contains("final.mp4: 25 frames, 1.00 s, 64×48,"))
        .unwrap_or_else(|| panic!("no summary line:\n{shown}"));
    assert!(summary.contains("× real time"), "{summary}");

    // Not a terminal: no bar, the summary on stdout before the final's path.
    let out = sb
        .va()
        .arg("run")
        .arg(&job)
        .args(["--workdir", "wd2"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = stderr_of(&out);
    assert!(
        !err.contains('%') && !err.contains("eta"),
        "no bar off a terminal: {err}"
    );
    let lines: Vec<String> = stdout_of(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(lines[0].starts_with("final.mp4: 25 frames"), "{lines:?}");
    assert!(lines[1].ends_with("final.mp4"), "{lines:?}");
}
