//! Running the setup's helper programs (`git`, ComfyUI's python and its pip) with a bound on
//! the wait: the output is captured, and a program that outlives its time limit is killed.
//! Only setup spawns programs; the media engine never does.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// What a finished program left: its exit code (`None` when killed by a signal or by the
/// time limit), stdout and stderr.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// The last non-empty lines of stderr (else stdout), folded into one line for an error.
    pub fn tail(&self, lines: usize) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let tail: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let start = tail.len().saturating_sub(lines);
        let joined = tail[start..].join(" | ");
        if self.timed_out {
            format!("timed out; {joined}")
        } else {
            joined
        }
    }
}

const PIPE_GRACE: Duration = Duration::from_secs(5);

/// Runs `cmd` to completion or until `limit`, whichever comes first. `Err` only when the
/// program cannot be started (the message is the OS's).
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Finished, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    // Readers on their own threads, so a chatty program never blocks on a full pipe.
    // A grandchild that inherited the pipes may keep them open after a kill: the collection
    // waits a bounded time for them.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
        });
        rx
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|s| Box::new(s) as Box<dyn Read + Send>),
    );
    let started = Instant::now();
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if started.elapsed() >= limit => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    Ok(Finished {
        code: if timed_out {
            None
        } else {
            status.and_then(|s| s.code())
        },
        stdout: out.recv_timeout(PIPE_GRACE).unwrap_or_default(),
        stderr: err.recv_timeout(PIPE_GRACE).unwrap_or_default(),
        timed_out,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_exit_code() {
        let f = run_bounded(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!(f.code, Some(3));
        assert_eq!(f.stdout.trim(), "out");
        assert_eq!(f.tail(1), "err");
    }

    #[test]
    fn a_program_past_its_limit_is_killed() {
        let f = run_bounded(
            Command::new("sh").args(["-c", "exec sleep 30"]),
            Duration::from_millis(200),
        )
        .unwrap();
        assert!(f.timed_out);
        assert!(!f.success());
    }

    #[test]
    fn a_missing_program_is_an_error() {
        assert!(run_bounded(
            &mut Command::new("/nonexistent/vidax-no-such-program"),
            Duration::from_secs(5)
        )
        .is_err());
    }
}
