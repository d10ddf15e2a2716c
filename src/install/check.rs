//! One checked item and the report that lists them: a table on a terminal, one JSON
//! document for programs (`--json`; the API's `GET /install/status` reads it).

use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Present and usable.
    Ok,
    /// A required part is missing or broken: the command exits 20.
    Fail,
    /// An optional part is missing: reported, never fatal.
    Warn,
    /// Not checked (`--skip-comfyui`, custom nodes turned off, …); the detail says why.
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What part of the setup: `ffmpeg`, `state`, `python`, `comfyui`, `config`, `asset`.
    pub group: &'static str,
    pub name: String,
    pub status: Status,
    /// Kept for programs that only look at these two: `ok` is true for `ok` and `skipped`.
    pub ok: bool,
    pub required: bool,
    pub detail: String,
    /// What `va install` would do about it (install-test), or what the user must do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
}

impl Check {
    /// A part the setup needs: `ok` or `fail` (exit 20).
    pub fn required(
        group: &'static str,
        name: impl Into<String>,
        ok: bool,
        detail: impl Into<String>,
    ) -> Check {
        let status = if ok { Status::Ok } else { Status::Fail };
        Check::new(group, name.into(), status, true, detail.into())
    }
    /// A part the setup can do without: `ok` or `warn`.
    pub fn optional(
        group: &'static str,
        name: impl Into<String>,
        ok: bool,
        detail: impl Into<String>,
    ) -> Check {
        let status = if ok { Status::Ok } else { Status::Warn };
        Check::new(group, name.into(), status, false, detail.into())
    }
    pub fn skipped(
        group: &'static str,
        name: impl Into<String>,
        detail: impl Into<String>,
    ) -> Check {
        Check::new(group, name.into(), Status::Skipped, false, detail.into())
    }
    fn new(
        group: &'static str,
        name: String,
        status: Status,
        required: bool,
        detail: String,
    ) -> Check {
        Check {
            group,
            name,
            status,
            ok: matches!(status, Status::Ok | Status::Skipped),
            required,
            detail,
            action: None,
        }
    }
    pub fn with_action(mut self, action: impl Into<String>) -> Check {
        self.action = Some(action.into());
        self
    }
}

/// All checks of one command, with the hints to print after the table.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: &'static str,
    pub ok: bool,
    pub checks: Vec<Check>,
    /// The names of the failed checks, in order.
    pub missing: Vec<String>,
    pub hints: Vec<String>,
}

impl Report {
    pub fn new(command: &'static str, checks: Vec<Check>, hints: Vec<String>) -> Report {
        let missing: Vec<String> = checks
            .iter()
            .filter(|c| c.status == Status::Fail)
            .map(|c| c.name.clone())
            .collect();
        Report {
            command,
            ok: missing.is_empty(),
            checks,
            missing,
            hints,
        }
    }

    /// The report as one JSON document on one line.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            serde_json::json!({"command": self.command, "ok": false, "error": e.to_string()})
                .to_string()
        })
    }

    /// The human table: one line per check, the action indented below it, then the hints and
    /// a closing line.
    pub fn to_table(&self) -> String {
        let width = self
            .checks
            .iter()
            .map(|c| c.name.chars().count())
            .max()
            .unwrap_or(0)
            .clamp(8, 44);
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Fail => "FAIL",
                Status::Warn => "warn",
                Status::Skipped => "skip",
            };
            out.push_str(&format!("{mark} {:<width$}  {}\n", c.name, c.detail));
            if let Some(a) = &c.action {
                out.push_str(&format!("     {:<width$}  -> {a}\n", ""));
            }
        }
        for h in &self.hints {
            out.push_str(&format!("hint: {h}\n"));
        }
        if self.ok {
            out.push_str(&format!("{}: all required parts present\n", self.command));
        } else {
            out.push_str(&format!(
                "{}: {} required part{} missing: {}\n",
                self.command,
                self.missing.len(),
                if self.missing.len() == 1 { "" } else { "s" },
                self.missing.join(", ")
            ));
        }
        out
    }
}
