//! `<workdir>/logs/events.jsonl`: the run's event log (SPEC §5), and reading it back for
//! `va logs`.
//!
//! Writing is a `tracing` layer ([`EventLayer`], made by [`EventLog::layer`]) that the binary
//! composes with its stderr formatter. Each event becomes one line:
//! `{"ts": "…Z", "level": "info", "stage": "encode", "msg": "…", <span fields>, <event fields>}`.
//! `stage` is the event's own `stage` field, else the innermost span's, else the event's
//! target; fields of the enclosing spans (root first) and of the event are flattened at top
//! level, the event's winning a clash. The layout is our own, not the json formatter's, so
//! it cannot change under us.
//!
//! The file behind an [`EventLog`] can be switched or detached at run time
//! ([`EventLog::set_file`]), so one process (the API server, a test binary) can log several runs
//! in turn. Lines are written whole and unbuffered, so `va logs --follow` sees them at once and
//! a crash leaves at most one torn last line, which the readers skip.
//!
//! Nothing here emits `tracing` events from inside the layer (that would recurse).

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use super::manifest::now_rfc3339;
use crate::error::{Error, ErrorKind, Result};

/// The log folder inside the workdir.
pub const LOGS_DIR: &str = "logs";
/// The event log's file name inside [`LOGS_DIR`].
pub const EVENTS_FILE: &str = "events.jsonl";

/// The keys every line starts with; fields with these names are written as `field_<name>`.
const RESERVED: [&str; 4] = ["ts", "level", "stage", "msg"];

/// How often [`follow`] looks for new lines.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// `<workdir>/logs/events.jsonl`.
pub fn events_path(workdir: &Path) -> PathBuf {
    workdir.join(LOGS_DIR).join(EVENTS_FILE)
}

struct Sink {
    path: PathBuf,
    file: File,
}

/// The event log of the current run: a switchable append-only file shared with the layers
/// made from it. Cloning shares the same file.
#[derive(Clone, Default)]
pub struct EventLog {
    sink: Arc<Mutex<Option<Sink>>>,
}

impl fmt::Debug for EventLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventLog")
            .field("path", &self.path())
            .finish()
    }
}

impl EventLog {
    /// A log that writes nowhere until [`EventLog::set_file`] gives it a file.
    pub fn new() -> EventLog {
        EventLog::default()
    }

    /// A log appending to `<workdir>/logs/events.jsonl` (folder and file created as needed).
    pub fn open(workdir: &Path) -> Result<EventLog> {
        let log = EventLog::new();
        log.set_file(Some(events_path(workdir)))?;
        Ok(log)
    }

    /// Appends from now on to `path` (its folder created as needed), or to nothing with
    /// `None`. Lines already written stay where they are.
    pub fn set_file(&self, path: Option<PathBuf>) -> Result<()> {
        let sink = match path {
            None => None,
            Some(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| {
                        Error::at_path(
                            ErrorKind::Internal,
                            dir,
                            format!("cannot create log folder: {e}"),
                        )
                    })?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| {
                        Error::at_path(
                            ErrorKind::Internal,
                            &path,
                            format!("cannot open event log: {e}"),
                        )
                    })?;
                Some(Sink { path, file })
            }
        };
        *lock(&self.sink) = sink;
        Ok(())
    }

    /// Switches to `<workdir>/logs/events.jsonl`, or detaches with `None`.
    pub fn set_workdir(&self, workdir: Option<&Path>) -> Result<()> {
        self.set_file(workdir.map(events_path))
    }

    /// The file currently written to.
    pub fn path(&self) -> Option<PathBuf> {
        lock(&self.sink).as_ref().map(|s| s.path.clone())
    }

    /// A layer writing to this log; compose it with others on a `tracing_subscriber::registry()`.
    pub fn layer(&self) -> EventLayer {
        EventLayer {
            sink: Arc::clone(&self.sink),
        }
    }
}

/// A poisoned lock only means another thread panicked mid-write; the file is still usable.
fn lock(m: &Mutex<Option<Sink>>) -> MutexGuard<'_, Option<Sink>> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `tracing` layer behind [`EventLog`]. It does no filtering of its own: give it a filter
/// with `Layer::with_filter` where the binary wants one.
pub struct EventLayer {
    sink: Arc<Mutex<Option<Sink>>>,
}

/// The recorded fields of a span, kept in its extensions for the events inside it.
#[derive(Default)]
struct SpanFields(Fields);

impl<S> Layer<S> for EventLayer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = Fields::default();
        attrs.record(&mut fields);
        // `replace`, not `insert`: a second EventLayer on the same subscriber must not panic.
        span.extensions_mut().replace(SpanFields(fields));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut ext = span.extensions_mut();
        match ext.get_mut::<SpanFields>() {
            Some(SpanFields(fields)) => values.record(fields),
            None => {
                let mut fields = Fields::default();
                values.record(&mut fields);
                ext.replace(SpanFields(fields));
            }
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if lock(&self.sink).is_none() {
            return;
        }

        let mut ev = Fields::default();
        event.record(&mut ev);

        // Span fields root first, so inner spans win; the innermost `stage` wins likewise.
        let mut span_fields = Map::new();
        let mut span_stage = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(SpanFields(sf)) = span.extensions().get::<SpanFields>() {
                    if sf.stage.is_some() {
                        span_stage.clone_from(&sf.stage);
                    }
                    for (k, v) in &sf.rest {
                        span_fields.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        let meta = event.metadata();
        let stage = ev
            .stage
            .or(span_stage)
            .unwrap_or_else(|| meta.target().to_string());

        let mut line = Map::new();
        line.insert("ts".into(), Value::String(now_rfc3339()));
        line.insert(
            "level".into(),
            Value::String(level_name(*meta.level()).into()),
        );
        line.insert("stage".into(), Value::String(stage));
        line.insert("msg".into(), Value::String(ev.message.unwrap_or_default()));
        for (k, v) in span_fields.into_iter().chain(ev.rest) {
            let k = if RESERVED.contains(&k.as_str()) {
                format!("field_{k}")
            } else {
                k
            };
            line.insert(k, v);
        }

        let mut text = Value::Object(line).to_string();
        text.push('\n');
        if let Some(sink) = lock(&self.sink).as_mut() {
            // One write of the whole line (the file is in append mode). A failed log write
            // must not fail the run, and there is nowhere left to report it.
            let _ = sink.file.write_all(text.as_bytes());
        }
    }
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// A string value as itself, anything else as its JSON text.
fn value_text(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// Records `tracing` fields as JSON values: numbers and booleans stay typed, everything
/// else becomes its `Display`/`Debug` text. `message` and `stage` are set aside for the
/// fixed keys; the rest keep their order of declaration.
#[derive(Default)]
struct Fields {
    message: Option<String>,
    stage: Option<String>,
    rest: Map<String, Value>,
}

impl Fields {
    fn put(&mut self, field: &Field, value: Value) {
        match field.name() {
            "message" => self.message = Some(value_text(value)),
            "stage" => self.stage = Some(value_text(value)),
            name => {
                self.rest.insert(name.to_string(), value);
            }
        }
    }
}

impl Visit for Fields {
    fn record_f64(&mut self, field: &Field, value: f64) {
        // JSON has no NaN or infinity; keep them readable rather than null.
        let v = serde_json::Number::from_f64(value)
            .map_or_else(|| Value::String(value.to_string()), Value::Number);
        self.put(field, v);
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::from(value));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::from(value));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, v);
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value).map_or_else(|_| Value::String(value.to_string()), Value::from);
        self.put(field, v);
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Bool(value));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::String(value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        // For `message` this is the formatted text (`fmt::Arguments` debug-prints plainly).
        self.put(field, Value::String(format!("{value:?}")));
    }
}

/// Every event of a log file, in order. Lines that are not JSON objects (a torn last line
/// after a crash) are skipped. A missing file is `INPUT_NOT_FOUND` naming it.
pub fn read_events(path: &Path) -> Result<Vec<Value>> {
    let bytes = std::fs::read(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::at_path(ErrorKind::InputNotFound, path, "no event log")
        } else {
            Error::at_path(
                ErrorKind::Internal,
                path,
                format!("cannot read event log: {e}"),
            )
        }
    })?;
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(parse_line)
        .collect())
}

fn parse_line(line: &str) -> Option<Value> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    serde_json::from_str::<Value>(line)
        .ok()
        .filter(Value::is_object)
}

/// One event as `va logs` prints it:
/// `08:00:01.123 INFO  encode  message key=value …` (time of day in UTC; the other fields in
/// file order; strings quoted only where needed to read back unambiguously).
pub fn format_event_human(v: &Value) -> String {
    let Some(obj) = v.as_object() else {
        return v.to_string();
    };
    let text = |key: &str| match obj.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    let ts = text("ts");
    let level = text("level").to_uppercase();
    let mut out = format!(
        "{} {:<5} {}  {}",
        clock_time(&ts),
        level,
        text("stage"),
        text("msg")
    );
    for (k, val) in obj {
        if RESERVED.contains(&k.as_str()) {
            continue;
        }
        out.push(' ');
        out.push_str(k);
        out.push('=');
        out.push_str(&human_value(val));
    }
    out.trim_end().to_string()
}

/// `2024-05-01T08:00:01.123Z` -> `08:00:01.123`; anything else is shown as it is.
fn clock_time(ts: &str) -> &str {
    match ts.split_once('T') {
        Some((_, rest)) => {
            let end = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
            &rest[..end]
        }
        None => ts,
    }
}

fn human_value(v: &Value) -> String {
    match v {
        Value::String(s)
            if !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || c == '"' || c == '=' || c.is_control()) =>
        {
            s.clone()
        }
        // Quoted as JSON: spaces, quotes and newlines stay readable and unambiguous.
        other => other.to_string(),
    }
}

/// `va logs --follow`: prints every event of `path` human-readably, then new ones as they
/// are appended (polling every 200 ms), until `stop()` says so; lines written before `stop()`
/// returned true are still printed. Waits for a file that does not exist yet; starts over
/// when the file shrinks (replaced).
pub fn follow(path: &Path, out: &mut impl Write, stop: impl Fn() -> bool) -> Result<()> {
    follow_with(path, out, format_event_human, stop)
}

/// [`follow`] with a choice of rendering (`|v| v.to_string()` for `--json`). A closed output
/// (`va logs --follow | head`) ends the follow quietly.
pub fn follow_with(
    path: &Path,
    out: &mut impl Write,
    render: impl Fn(&Value) -> String,
    stop: impl Fn() -> bool,
) -> Result<()> {
    let mut offset = 0u64;
    let mut pending: Vec<u8> = Vec::new();
    loop {
        // Asked before reading, so the last read after `stop` covers everything written
        // before it.
        let stopping = stop();
        match File::open(path) {
            Ok(mut file) => {
                let len = file
                    .metadata()
                    .map_err(|e| Error::at_path(ErrorKind::Internal, path, e))?
                    .len();
                if len < offset {
                    offset = 0;
                    pending.clear();
                }
                if len > offset {
                    file.seek(SeekFrom::Start(offset))
                        .and_then(|_| (&mut file).take(len - offset).read_to_end(&mut pending))
                        .map(|n| offset += n as u64)
                        .map_err(|e| {
                            Error::at_path(
                                ErrorKind::Internal,
                                path,
                                format!("cannot read event log: {e}"),
                            )
                        })?;
                    let mut consumed = 0;
                    while let Some(nl) = pending[consumed..].iter().position(|&b| b == b'\n') {
                        let line =
                            String::from_utf8_lossy(&pending[consumed..consumed + nl]).into_owned();
                        consumed += nl + 1;
                        if let Some(v) = parse_line(&line) {
                            if !emit(out, &render(&v))? {
                                return Ok(());
                            }
                        }
                    }
                    // A torn tail waits for the rest of its line.
                    pending.drain(..consumed);
                    if !flush(out)? {
                        return Ok(());
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(Error::at_path(
                    ErrorKind::Internal,
                    path,
                    format!("cannot open event log: {e}"),
                ));
            }
        }
        if stopping {
            return Ok(());
        }
        std::thread::sleep(FOLLOW_POLL);
    }
}

/// Writes one line; `Ok(false)` when the reader has gone away.
fn emit(out: &mut impl Write, line: &str) -> Result<bool> {
    match writeln!(out, "{line}") {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::internal(format!("cannot write log output: {e}"))),
    }
}

fn flush(out: &mut impl Write) -> Result<bool> {
    match out.flush() {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(Error::internal(format!("cannot write log output: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tracing_subscriber::layer::SubscriberExt;

    fn with_log<R>(log: &EventLog, f: impl FnOnce() -> R) -> R {
        let subscriber = tracing_subscriber::registry().with(log.layer());
        tracing::subscriber::with_default(subscriber, f)
    }

    fn lines(path: &Path) -> Vec<Value> {
        std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn event_line_has_fixed_keys_first_then_flattened_fields() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        with_log(&log, || {
            tracing::info!(stage = "encode", frames = 250u64, ok = true, ratio = 0.5, delta = -3i64, path = %"/a b", "encoded {} frames", 250);
        });
        let path = events_path(dir.path());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.ends_with('\n'));
        let v = &lines(&path)[0];
        let keys: Vec<_> = v.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["ts", "level", "stage", "msg", "frames", "ok", "ratio", "delta", "path"]
        );
        assert_eq!(v["level"], "info");
        assert_eq!(v["stage"], "encode");
        assert_eq!(v["msg"], "encoded 250 frames");
        assert_eq!(v["frames"], 250);
        assert_eq!(v["ok"], true);
        assert_eq!(v["ratio"], 0.5);
        assert_eq!(v["delta"], -3);
        assert_eq!(v["path"], "/a b");
        let ts = v["ts"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
    }

    #[test]
    fn stage_comes_from_the_innermost_span_unless_the_event_names_one() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        with_log(&log, || {
            let run = tracing::info_span!("run", run_id = "r1", stage = "run");
            let _r = run.enter();
            let comfy = tracing::info_span!(
                "phase",
                stage = "comfyui",
                prompt_id = tracing::field::Empty
            );
            let _c = comfy.enter();
            tracing::warn!("polling");
            comfy.record("prompt_id", "p-42");
            tracing::info!(attempt = 2, "retrying");
            tracing::error!(stage = "encode", run_id = "override", "mine");
        });
        let v = lines(&events_path(dir.path()));
        assert_eq!(v.len(), 3);
        assert_eq!(v[0]["stage"], "comfyui");
        assert_eq!(v[0]["level"], "warn");
        assert_eq!(v[0]["run_id"], "r1", "span fields are flattened");
        assert!(
            v[0].get("prompt_id").is_none(),
            "an empty span field is not recorded"
        );
        assert_eq!(v[1]["prompt_id"], "p-42", "a recorded span field shows up");
        assert_eq!(v[1]["attempt"], 2);
        assert_eq!(v[2]["stage"], "encode");
        assert_eq!(v[2]["level"], "error");
        assert_eq!(
            v[2]["run_id"], "override",
            "event fields win over span fields"
        );
    }

    #[test]
    fn stage_falls_back_to_the_target_and_reserved_names_are_renamed() {
        let dir = tempfile::tempdir().unwrap();
        let log = EventLog::open(dir.path()).unwrap();
        with_log(&log, || {
            tracing::debug!(target: "vidax::media", ts = 1, msg = "shadow", "decoded");
        });
        let v = &lines(&events_path(dir.path()))[0];
        assert_eq!(v["stage"], "vidax::media");
        assert_eq!(v["level"], "debug");
        assert_eq!(v["msg"], "decoded");
        assert_eq!(v["field_ts"], 1);
        assert_eq!(v["field_msg"], "shadow");
    }

    #[test]
    fn the_file_can_be_switched_and_detached_within_one_process() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let log = EventLog::new();
        with_log(&log, || {
            tracing::info!("nowhere");
            log.set_workdir(Some(&a)).unwrap();
            tracing::info!("to a");
            log.set_file(Some(events_path(&b))).unwrap();
            assert_eq!(log.path(), Some(events_path(&b)));
            tracing::info!("to b");
            log.set_file(None).unwrap();
            tracing::info!("nowhere again");
            log.set_workdir(Some(&a)).unwrap();
            tracing::info!("a again");
        });
        let msgs = |wd: &Path| -> Vec<String> {
            lines(&events_path(wd))
                .iter()
                .map(|v| v["msg"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(msgs(&a), ["to a", "a again"], "appends, never truncates");
        assert_eq!(msgs(&b), ["to b"]);
    }

    #[test]
    fn two_event_layers_on_one_subscriber_do_not_clash() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            EventLog::open(&dir.path().join("a")).unwrap(),
            EventLog::open(&dir.path().join("b")).unwrap(),
        );
        let subscriber = tracing_subscriber::registry()
            .with(a.layer())
            .with(b.layer());
        tracing::subscriber::with_default(subscriber, || {
            let s = tracing::info_span!("s", stage = "prepare");
            let _g = s.enter();
            tracing::info!("both");
        });
        for wd in [dir.path().join("a"), dir.path().join("b")] {
            assert_eq!(lines(&events_path(&wd))[0]["stage"], "prepare");
        }
    }

    #[test]
    fn read_events_skips_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("events.jsonl");
        std::fs::write(&p, "{\"msg\":\"a\"}\n\n{\"msg\":\"b\"}\n{\"msg\":\"c").unwrap();
        let v = read_events(&p).unwrap();
        assert_eq!(v, vec![json!({"msg": "a"}), json!({"msg": "b"})]);
        assert_eq!(
            read_events(&dir.path().join("none")).unwrap_err().kind,
            ErrorKind::InputNotFound
        );
    }

    #[test]
    fn human_format() {
        let v = json!({
            "ts": "2024-05-01T08:00:01.123Z", "level": "info", "stage": "encode",
            "msg": "encoded", "frames": 250, "path": "/runs/a b.mp4", "ok": true, "empty": "",
            "name": "final.mp4"
        });
        assert_eq!(
            format_event_human(&v),
            "08:00:01.123 INFO  encode  encoded frames=250 path=\"/runs/a b.mp4\" ok=true empty=\"\" name=final.mp4"
        );
        let w = json!({"ts": "2024-05-01T08:00:01.123Z", "level": "warn", "stage": "comfyui", "msg": ""});
        assert_eq!(format_event_human(&w), "08:00:01.123 WARN  comfyui");
    }

    #[test]
    fn follow_prints_existing_and_appended_lines_including_split_writes() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("logs").join("events.jsonl");
        let done = Arc::new(AtomicBool::new(false));
        let writer = {
            let p = p.clone();
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                // The file does not exist when following starts.
                std::thread::sleep(Duration::from_millis(250));
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                let mut f = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&p)
                    .unwrap();
                f.write_all(b"{\"ts\":\"2024-05-01T08:00:01.123Z\",\"level\":\"info\",\"stage\":\"prepare\",\"msg\":\"one\"}\n{\"msg\":\"tw").unwrap();
                std::thread::sleep(Duration::from_millis(450));
                f.write_all(b"o\",\"n\":2}\n").unwrap();
                done.store(true, Ordering::SeqCst);
            })
        };
        let mut out = Vec::new();
        follow_with(
            &p,
            &mut out,
            |v| v.to_string(),
            || done.load(Ordering::SeqCst),
        )
        .unwrap();
        writer.join().unwrap();
        let text = String::from_utf8(out).unwrap();
        let got: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(got.len(), 2, "{text}");
        assert_eq!(got[0]["msg"], "one");
        assert_eq!(got[1], json!({"msg": "two", "n": 2}));

        let mut human = Vec::new();
        follow(&p, &mut human, || true).unwrap();
        assert!(String::from_utf8(human)
            .unwrap()
            .starts_with("08:00:01.123 INFO  prepare  one\n"));
    }
}
