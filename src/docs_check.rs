//! Keeps the user documentation honest against the code:
//! - `docs/ERRORS.md` has a table row for every [`ErrorKind`] with its code name and exit code,
//!   and names no code the enum lacks;
//! - `docs/OUTPUT_CONTRACT.md` describes every top-level key of a serialized [`Manifest`] in its
//!   "Top-level keys" table, and no key the manifest lacks;
//! - `docs/SECURITY.md` lists every limit with its default in its "Limits" table, and no limit
//!   the code lacks.

use std::collections::BTreeSet;

use crate::error::ErrorKind;
use crate::record::Manifest;

const ERRORS_MD: &str = include_str!("../docs/ERRORS.md");
const OUTPUT_CONTRACT_MD: &str = include_str!("../docs/OUTPUT_CONTRACT.md");
const SECURITY_MD: &str = include_str!("../docs/SECURITY.md");

/// The trimmed cells of a Markdown table row (`| a | b |` -> `["a", "b"]`); `None` for a line
/// that is not a table row. An escaped pipe (`\|`) stays inside its cell.
fn table_cells(line: &str) -> Option<Vec<String>> {
    let line = line.trim();
    let inner = line.strip_prefix('|')?;
    let inner = inner.strip_suffix('|').unwrap_or(inner);
    const ESCAPED: &str = "\u{0}";
    Some(
        inner
            .replace("\\|", ESCAPED)
            .split('|')
            .map(|c| c.replace(ESCAPED, "\\|").trim().to_string())
            .collect(),
    )
}

fn rows(text: &str) -> impl Iterator<Item = Vec<String>> + '_ {
    text.lines().filter_map(table_cells)
}

/// `` `NAME` `` -> `NAME`, for a cell that is exactly one code span.
fn code_span(cell: &str) -> Option<&str> {
    let name = cell.strip_prefix('`')?.strip_suffix('`')?;
    (!name.is_empty() && !name.contains('`')).then_some(name)
}

/// Rows of the form `` | `CODE` | <integer> | … `` in ERRORS.md, as (code, exit code).
fn documented_codes() -> Vec<(String, i32)> {
    rows(ERRORS_MD)
        .filter_map(|cells| {
            let code = code_span(cells.first()?)?;
            let exit = cells.get(1)?.parse::<i32>().ok()?;
            Some((code.to_string(), exit))
        })
        .collect()
}

#[test]
fn every_error_code_has_a_row_with_its_exit_code() {
    let documented = documented_codes();
    let mut missing = Vec::new();
    for kind in ErrorKind::ALL {
        let exits: Vec<i32> = documented
            .iter()
            .filter(|(code, _)| code == kind.code())
            .map(|&(_, exit)| exit)
            .collect();
        if exits.is_empty() {
            missing.push(format!("{} (exit {})", kind.code(), kind.exit_code()));
        }
        for exit in exits {
            assert_eq!(
                exit,
                kind.exit_code(),
                "docs/ERRORS.md gives {} exit {exit}, the code says {}",
                kind.code(),
                kind.exit_code()
            );
        }
    }
    assert!(
        missing.is_empty(),
        "docs/ERRORS.md has no table row `| \\`CODE\\` | EXIT | … |` for: {}",
        missing.join(", ")
    );
}

#[test]
fn errors_doc_names_no_unknown_code() {
    let known: BTreeSet<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
    let unknown: Vec<String> = documented_codes()
        .into_iter()
        .filter(|(code, _)| !known.contains(code.as_str()))
        .map(|(code, exit)| format!("{code} (exit {exit})"))
        .collect();
    assert!(
        unknown.is_empty(),
        "docs/ERRORS.md lists codes that ErrorKind lacks: {}",
        unknown.join(", ")
    );
}

/// The text under `heading` in OUTPUT_CONTRACT.md, up to the next heading.
fn contract_section(heading: &str) -> &'static str {
    let section = OUTPUT_CONTRACT_MD
        .split_once(&format!("\n{heading}\n"))
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("docs/OUTPUT_CONTRACT.md has a {heading:?} section"));
    section.split("\n#").next().unwrap_or(section)
}

/// The first-column code spans of the table under `### Top-level keys` in OUTPUT_CONTRACT.md.
fn documented_manifest_keys() -> BTreeSet<String> {
    rows(contract_section("### Top-level keys"))
        .filter_map(|cells| code_span(cells.first()?).map(str::to_string))
        .collect()
}

/// The `| phase | keys |` table under ``### `phases` ``: the phase (`` `prepare` `` …, or
/// `every phase`) and its keys, in the table's order.
fn documented_phase_keys() -> Vec<(String, BTreeSet<String>)> {
    rows(contract_section("### `phases`"))
        .filter(|cells| cells.len() == 2)
        .filter_map(|cells| {
            let phase = code_span(&cells[0]).unwrap_or(&cells[0]).to_string();
            let keys = cells[1]
                .split(", ")
                .filter_map(|k| code_span(k.trim()).map(str::to_string))
                .collect();
            (phase != "phase" && !phase.starts_with("---")).then_some((phase, keys))
        })
        .collect()
}

/// A manifest with every phase and every field of every phase set (struct literals without
/// `..Default::default()`: a new field does not compile here until it is set).
fn manifest_with_every_phase_field() -> Manifest {
    use crate::record::phases::*;
    let state = PhaseState {
        status: PhaseStatus::Completed,
        started_at: Some("2024-05-01T08:00:01.123Z".into()),
        ended_at: Some("2024-05-01T08:00:01.456Z".into()),
        duration_seconds: Some(0.333),
        reason: Some("why".into()),
    };
    let mut m = Manifest::new("x");
    m.phases = Phases {
        prepare: Some(Phase {
            state: state.clone(),
            fields: PrepareFields {
                audio_codec: Some("pcm_s16le".into()),
                audio_channels: Some(1),
                corrupt_packets: Some(0),
                audio_padded: Some("prepare/audio_padded.wav".into()),
                start_video: Some(None),
            },
        }),
        faceprobe: Some(Phase {
            state: state.clone(),
            fields: FaceprobeFields {
                staged: Some(Some("comfyui/staged/still.png".into())),
                prompt_ids: Some(vec![]),
                attempts: Some(vec![]),
                method: Some("s3fd".into()),
                found: Some(true),
                face_meta: Some("faceprobe/face_meta.json".into()),
                reused: Some(true),
            },
        }),
        comfyui: Some(Phase {
            state: state.clone(),
            fields: ComfyuiFields {
                system_stats: Some(serde_json::json!({})),
            },
        }),
        lipsync: Some(Phase {
            state: state.clone(),
            fields: NoFields {},
        }),
        encode: Some(Phase {
            state: state.clone(),
            fields: EncodeFields {
                report: Some(Default::default()),
                passes: Some(1),
            },
        }),
        finalize: Some(Phase {
            state: state.clone(),
            fields: NoFields {},
        }),
        extra: Default::default(),
    };
    m
}

#[test]
fn output_contract_phase_key_table_matches_the_phase_types() {
    let documented = documented_phase_keys();
    let names: Vec<&str> = documented.iter().map(|(n, _)| n.as_str()).collect();
    let mut expected = vec!["every phase"];
    expected.extend(crate::record::manifest::PHASES);
    assert_eq!(
        names, expected,
        "docs/OUTPUT_CONTRACT.md phase key table: rows, in pipeline order"
    );
    let common = &documented[0].1;
    let v = serde_json::to_value(manifest_with_every_phase_field()).unwrap();
    for (name, keys) in &documented[1..] {
        let written: BTreeSet<String> = v["phases"][name]
            .as_object()
            .unwrap_or_else(|| panic!("phase {name} missing"))
            .keys()
            .cloned()
            .collect();
        let doc: BTreeSet<String> = common.union(keys).cloned().collect();
        assert_eq!(
            written, doc,
            "phase {name}: the keys the types write (left) and the documented keys (right) differ"
        );
    }
}

fn manifest_keys() -> BTreeSet<String> {
    let value = serde_json::to_value(Manifest::new("x")).expect("a manifest serializes");
    value
        .as_object()
        .expect("a manifest serializes to a JSON object")
        .keys()
        .cloned()
        .collect()
}

#[test]
fn output_contract_mentions_every_top_level_manifest_key() {
    let keys = manifest_keys();
    assert!(!keys.is_empty());
    let missing: Vec<&String> = keys
        .iter()
        .filter(|k| !OUTPUT_CONTRACT_MD.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/OUTPUT_CONTRACT.md does not mention the manifest keys {missing:?}"
    );
}

#[test]
fn output_contract_key_table_matches_the_manifest() {
    let keys = manifest_keys();
    let documented = documented_manifest_keys();
    let undocumented: Vec<&String> = keys.difference(&documented).collect();
    let stale: Vec<&String> = documented.difference(&keys).collect();
    assert!(
        undocumented.is_empty() && stale.is_empty(),
        "docs/OUTPUT_CONTRACT.md \"Top-level keys\" table: missing rows {undocumented:?}, \
         rows for keys the manifest lacks {stale:?}"
    );
}

/// Every limit of the code with its default: `vidax.json`'s, the job's, the fixed ones.
fn code_limits() -> std::collections::BTreeMap<String, u64> {
    let job = crate::job::Limits::default();
    let comfyui = crate::job::Comfyui::default();
    let mut all: std::collections::BTreeMap<String, u64> = crate::api::config::LIMITS
        .iter()
        .map(|&(name, default)| (name.to_string(), default))
        .collect();
    for (name, default) in [
        ("limits.max_image_pixels", job.max_image_pixels),
        ("limits.max_comfyui_json_bytes", job.max_comfyui_json_bytes),
        ("limits.max_comfyui_file_bytes", job.max_comfyui_file_bytes),
        ("comfyui.timeout_seconds", comfyui.timeout_seconds),
        (
            "comfy::client::REQUEST_TIMEOUT",
            crate::comfy::client::REQUEST_TIMEOUT.as_secs(),
        ),
        (
            "comfy::client::MAX_REDIRECTS",
            crate::comfy::client::MAX_REDIRECTS as u64,
        ),
        (
            "comfy::client::HEADER_WINDOW",
            crate::comfy::client::HEADER_WINDOW as u64,
        ),
        (
            "api::listen::RESERVED_FDS",
            crate::api::listen::RESERVED_FDS,
        ),
    ] {
        all.insert(name.to_string(), default);
    }
    all
}

#[test]
fn security_doc_lists_every_limit_with_its_default() {
    let section = SECURITY_MD
        .split_once("\n## Limits")
        .map(|(_, rest)| rest)
        .expect("docs/SECURITY.md has a \"## Limits\" section");
    let section = section.split("\n## ").next().unwrap_or(section);
    let documented: std::collections::BTreeMap<String, u64> = rows(section)
        .filter_map(|cells| {
            let name = code_span(cells.first()?)?;
            let default = cells.get(2)?.parse::<u64>().ok()?;
            Some((name.to_string(), default))
        })
        .collect();
    assert!(!documented.is_empty());
    assert_eq!(
        documented,
        code_limits(),
        "docs/SECURITY.md \"Limits\" table (left) and the code's defaults (right) differ"
    );
}

#[test]
fn table_cells_parse_rows() {
    assert_eq!(
        table_cells("| `USAGE` | 2 | a \\| b |"),
        Some(vec![
            "`USAGE`".to_string(),
            "2".to_string(),
            "a \\| b".to_string()
        ])
    );
    assert_eq!(table_cells("not a row"), None);
    assert_eq!(code_span("`X_Y`"), Some("X_Y"));
    assert_eq!(code_span("X_Y"), None);
}
