//! The daemon's end of a repeated exec or HTTP attempt (`execEvery`,
//! `httpEvery`, see `repeat`): the subscription on a connection of its
//! own, and the runs read from it.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::protocol::{ExecResult, Op, Request, Response, Run, PROTOCOL_VERSION, TOO_MANY_REPEATS};
use crate::probe::http1::Made;
use crate::runtime::api::{Ran, Repeats, RuntimeError};

/// What a run of one kind reports.
pub trait RunResult: Sized + Send + 'static {
    /// The runtime operation a run stands for, counted in kubelet's
    /// runtime metrics (none: kubelet makes it itself).
    const RUNTIME_OP: Option<&'static str>;
    fn take(run: Run) -> Option<Self>;
}

impl RunResult for ExecResult {
    const RUNTIME_OP: Option<&'static str> = Some("exec_sync");
    fn take(run: Run) -> Option<Self> {
        run.exec
    }
}

impl RunResult for Made {
    const RUNTIME_OP: Option<&'static str> = None;
    fn take(run: Run) -> Option<Self> {
        run.http
            .map(Made::Done)
            .or_else(|| run.handoff.map(Made::Unfinished))
    }
}

/// Runs of one repeated exec or HTTP attempt, as its shim reports them.
pub struct ShimRuns<T> {
    sandbox: String,
    id: String,
    conn: BufReader<UnixStream>,
    line: String,
    kind: std::marker::PhantomData<fn() -> T>,
}

impl<T: RunResult> ShimRuns<T> {
    /// Sends `op` (an `ExecEvery`) on `conn` and reads the shim's answer.
    /// `None`: the shim cannot: it predates the op (it answers "bad
    /// request") or holds as many as it takes.
    pub async fn subscribe(
        conn: UnixStream,
        sandbox: &str,
        id: &str,
        op: Op,
    ) -> Result<Option<ShimRuns<T>>, RuntimeError> {
        let mut req = serde_json::to_vec(&Request {
            v: PROTOCOL_VERSION,
            op,
        })
        .unwrap_or_default();
        req.push(b'\n');
        let mut runs = ShimRuns {
            sandbox: sandbox.into(),
            id: id.into(),
            conn: BufReader::new(conn),
            line: String::new(),
            kind: std::marker::PhantomData,
        };
        runs.conn
            .get_mut()
            .write_all(&req)
            .await
            .map_err(|e| runs.shim_err("send request", e))?;
        let answer = runs.read().await?;
        match (answer.ok, answer.error) {
            (true, _) => Ok(Some(runs)),
            (false, Some(e)) if e.starts_with("bad request") || e.starts_with(TOO_MANY_REPEATS) => {
                Ok(None)
            }
            (false, e) => Err(runs.container_err(e.unwrap_or_default())),
        }
    }

    fn shim_err(&self, action: &str, source: std::io::Error) -> RuntimeError {
        RuntimeError::Shim {
            sandbox: self.sandbox.clone(),
            action: action.into(),
            source,
        }
    }

    fn container_err(&self, message: String) -> RuntimeError {
        RuntimeError::Container {
            sandbox: self.sandbox.clone(),
            id: self.id.clone(),
            message,
        }
    }

    /// The next line from the shim.
    async fn read(&mut self) -> Result<Response, RuntimeError> {
        self.line.clear();
        let n = self
            .conn
            .read_line(&mut self.line)
            .await
            .map_err(|e| self.shim_err("read repeated exec", e))?;
        if n == 0 {
            let gone = std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the shim closed the connection",
            );
            return Err(self.shim_err("read repeated exec", gone));
        }
        serde_json::from_str(&self.line)
            .map_err(|e| self.shim_err("decode response", std::io::Error::other(e)))
    }
}

impl<T: RunResult> Repeats<T> for ShimRuns<T> {
    /// Each exec run counts as an `exec_sync` runtime operation, as the
    /// exec it stands for would.
    async fn next(&mut self) -> Result<Vec<Ran<T>>, RuntimeError> {
        let r = self.read().await?;
        if !r.ok {
            return Err(self.container_err(r.error.unwrap_or_default()));
        }
        let runs = r.runs.unwrap_or_default();
        Ok(runs
            .into_iter()
            .map(|run| {
                let took = Duration::from_micros(run.micros);
                let result = match run.error.clone() {
                    Some(e) => Err(self.container_err(e)),
                    None => T::take(run).ok_or_else(|| self.container_err("no result".into())),
                };
                if let Some(op) = T::RUNTIME_OP {
                    crate::metrics::record_runtime_op(op, result.is_ok(), took.as_secs_f64());
                }
                Ran { result, took }
            })
            .collect())
    }
}
