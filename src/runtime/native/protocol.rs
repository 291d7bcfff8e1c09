//! The shim protocol: one JSON object per line each way, versioned.

use serde::{Deserialize, Serialize};

use crate::probe::action::Outcome;
use crate::probe::http1::{Get, Made};
use crate::runtime::record::ExitRecord;

pub const PROTOCOL_VERSION: u32 = 1;
pub const SOCKET_NAME: &str = "shim.sock";
pub const PID_FILE: &str = "shim.pid";
/// `execEvery`, `httpEvery` and `dialEvery` subscriptions a shim holds at
/// most (three probes for each of many containers); past that it answers
/// [`TOO_MANY_REPEATS`] and the caller probes on each tick instead. (The
/// words predate the network ops; daemons match them as they are.)
pub const MAX_REPEATS: usize = 256;
pub const TOO_MANY_REPEATS: &str = "too many repeated execs";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase")]
pub enum Op {
    Ping,
    #[serde(rename_all = "camelCase")]
    Create {
        id: String,
        bundle: String,
        log_dir: String,
        restart_count: u32,
        log_max_size: u64,
        log_max_files: u32,
        /// Host file bind-mounted at the container's terminationMessagePath,
        /// read into the exit record.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        termination_message_file: Option<String>,
        /// `FallbackToLogsOnError`.
        #[serde(default)]
        fallback_to_logs: bool,
    },
    Start {
        id: String,
    },
    #[serde(rename_all = "camelCase")]
    Signal {
        id: String,
        signal: i32,
        /// CLOCK_MONOTONIC nanoseconds at which the shim SIGKILLs the
        /// container if it still runs (the end of its grace period): the
        /// kill lands on time however busy the daemon or the shim's socket.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kill_at: Option<u64>,
    },
    State {
        id: String,
    },
    /// Every container the shim holds (created, running or exited).
    List,
    Remove {
        id: String,
    },
    /// Freezes a running container's cgroup. Done by the shim, between
    /// its requests, so a freeze never lands on an exec it is starting:
    /// the command, frozen before its execve, would hold the shim (which
    /// waits for that execve) until the thaw.
    Pause {
        id: String,
    },
    /// Runs a command in a running container; replies when it ends.
    #[serde(rename_all = "camelCase")]
    Exec {
        id: String,
        args: Vec<String>,
        timeout_ms: u64,
        max_output: usize,
    },
    /// Runs a command in a running container at `firstAt` (CLOCK_MONOTONIC
    /// nanoseconds) and every `periodMs` after, one run at a time, until
    /// the connection closes: an exec probe run by the shim on the probe's
    /// grid, so neither side exchanges a request per probe. Answered at
    /// once with `ok`, then with `runs` lines (see [`Run`]).
    #[serde(rename_all = "camelCase")]
    ExecEvery {
        id: String,
        args: Vec<String>,
        max_output: usize,
        #[serde(flatten)]
        every: Every,
    },
    /// Makes a plain-HTTP `httpGet` probe's attempt from the pod's network
    /// namespace at `firstAt` and every `periodMs` after, one at a time,
    /// until the connection closes; reported like an `execEvery`'s runs,
    /// each with its outcome (`Run::http`). HTTPS attempts stay with the
    /// daemon.
    HttpEvery {
        get: Get,
        #[serde(flatten)]
        every: Every,
    },
    /// Connects to `addr` (a `tcpSocket` probe's attempt) from the pod's
    /// network namespace, like `httpEvery`: success once connected (the
    /// connection then closes), else Go's dial error.
    DialEvery {
        addr: std::net::SocketAddr,
        #[serde(flatten)]
        every: Every,
    },
    Shutdown,
    /// Answers once the shim's change counter passes `since` (a container
    /// exited): at once if it already has, else when it does. Lets the
    /// daemon wait for exits instead of polling.
    Watch {
        since: u64,
    },
}

/// When the runs of an `execEvery`, `httpEvery` or `dialEvery` are due,
/// and which are reported at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Every {
    /// Each run's time limit.
    pub timeout_ms: u64,
    /// CLOCK_MONOTONIC nanoseconds of the first run.
    pub first_at: u64,
    pub period_ms: u64,
    /// Successes after this many in a row are held and sent in batches
    /// (or ahead of the next failure), none held longer than ten seconds:
    /// the caller acts on every failure, and on successes only until its
    /// result flips.
    pub quiet_after: u32,
}

/// The outcome of an exec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExecResult {
    /// Exit code, or 128 + signal.
    pub exit_code: i32,
    pub stdout: String,
    pub stderr: String,
    /// Killed at the deadline.
    pub timed_out: bool,
    /// Output beyond `maxOutput` bytes per stream was dropped.
    pub truncated: bool,
}

/// One run of an `execEvery` or `httpEvery`: its result, or why it could
/// not run (the container stopped, the command could not be started), and
/// how long it took.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecResult>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<Outcome>,
    /// An HTTP attempt redirected to HTTPS, for the daemon to finish.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handoff: Option<Get>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub micros: u64,
}

impl Run {
    /// An exec's result, after `took`.
    pub fn of_exec(result: ExecResult, took: std::time::Duration) -> Run {
        Run {
            exec: Some(result),
            ..Run::empty(took)
        }
    }

    /// What a network attempt made, after `took`.
    pub fn of_http(made: Made, took: std::time::Duration) -> Run {
        let (http, handoff) = match made {
            Made::Done(o) => (Some(o), None),
            Made::Unfinished(get) => (None, Some(get)),
        };
        Run {
            http,
            handoff,
            ..Run::empty(took)
        }
    }

    /// A run that could not be made, and why.
    pub fn refused(why: String) -> Run {
        Run {
            error: Some(why),
            ..Run::empty(std::time::Duration::ZERO)
        }
    }

    fn empty(took: std::time::Duration) -> Run {
        Run {
            exec: None,
            http: None,
            handoff: None,
            error: None,
            micros: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// A success with nothing to tell beyond it: an exec that exited 0
    /// in time, an HTTP attempt that succeeded without a warning.
    pub fn plain_success(&self) -> bool {
        self.error.is_none()
            && match (&self.exec, &self.http) {
                (Some(e), None) => e.exit_code == 0 && !e.timed_out,
                (None, Some(o)) => matches!(o, Outcome::Success(_)),
                _ => false,
            }
    }

    /// This run without its output (a success held in a batch: no one
    /// reads it).
    pub fn without_output(&self) -> Run {
        Run {
            exec: self.exec.as_ref().map(|e| ExecResult {
                stdout: String::new(),
                stderr: String::new(),
                truncated: false,
                ..e.clone()
            }),
            http: self.http.as_ref().map(|o| match o {
                Outcome::Success(_) => Outcome::Success(String::new()),
                other => other.clone(),
            }),
            handoff: self.handoff.clone(),
            error: self.error.clone(),
            micros: self.micros,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerState {
    pub id: String,
    pub status: Status,
    pub pid: i32,
    pub started_at: Option<String>,
    pub exit: Option<ExitRecord>,
    /// Its cgroup is frozen (filled in by the runtime, not the shim).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<ContainerState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecResult>,
    /// The change counter (`Watch`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Runs of an `execEvery`, oldest first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runs: Option<Vec<Run>>,
    /// The shim's containers (`List`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub containers: Option<Vec<ContainerState>>,
}

impl Response {
    pub fn ok() -> Self {
        Response {
            ok: true,
            error: None,
            state: None,
            pid: None,
            exec: None,
            seq: None,
            runs: None,
            containers: None,
        }
    }

    pub fn err(msg: impl Into<String>) -> Self {
        Response {
            ok: false,
            error: Some(msg.into()),
            ..Response::ok()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_flat_versioned_json() {
        let r = Request {
            v: 1,
            op: Op::Signal {
                id: "c".into(),
                signal: 15,
                kill_at: None,
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(s, r#"{"v":1,"op":"signal","id":"c","signal":15}"#);
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        // Repeated ops carry their timing flat beside their own fields.
        let every = Every {
            timeout_ms: 1000,
            first_at: 12_345_678_901_234,
            period_ms: 2000,
            quiet_after: 1,
        };
        let r = Request {
            v: 1,
            op: Op::DialEvery {
                addr: "127.0.0.1:80".parse().unwrap(),
                every,
            },
        };
        let s = serde_json::to_string(&r).unwrap();
        assert_eq!(
            s,
            r#"{"v":1,"op":"dialEvery","addr":"127.0.0.1:80","timeoutMs":1000,"firstAt":12345678901234,"periodMs":2000,"quietAfter":1}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&s).unwrap(), r);
        let e: Request = serde_json::from_str(r#"{"v":1,"op":"execEvery","id":"c","args":["true"],"maxOutput":10,"timeoutMs":1000,"firstAt":12345678901234,"periodMs":2000,"quietAfter":1}"#).unwrap();
        assert_eq!(
            e.op,
            Op::ExecEvery {
                id: "c".into(),
                args: vec!["true".into()],
                max_output: 10,
                every
            }
        );
        let c: Request = serde_json::from_str(r#"{"v":1,"op":"create","id":"a","bundle":"/b","logDir":"/l","restartCount":2,"logMaxSize":10,"logMaxFiles":5}"#).unwrap();
        assert!(matches!(
            c.op,
            Op::Create {
                restart_count: 2,
                ..
            }
        ));
    }
}
