//! The real `maintcast ingest` binary as a process of its own: what kill -9 and memory tests
//! need (a pid, its resident memory), with its log kept in a file and its `/metrics` on a known
//! port, so a failing test can say what the process was doing.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use crate::fleet::maintcast_bin;
use crate::ingest::free_port;
use crate::{InfluxEnv, diag};

/// How to run one `maintcast ingest`: run `run`'s topics and group, as `ingest::service_config`.
#[derive(Clone)]
pub struct IngestArgs {
    pub brokers: String,
    pub influx: InfluxEnv,
    /// Where the token comes from; `None` passes the token itself in the environment.
    pub token_file: Option<PathBuf>,
    pub registry: PathBuf,
    pub model: String,
    pub run: String,
    /// Further flags (`--queue-capacity 64`, ...).
    pub extra: Vec<String>,
    /// Further environment (`MAINTCAST_KAFKA_<PROP>` client properties, say).
    pub env: Vec<(String, String)>,
}

impl IngestArgs {
    pub fn new(
        brokers: &str,
        influx: InfluxEnv,
        registry: &std::path::Path,
        model: &str,
        run: &str,
    ) -> IngestArgs {
        IngestArgs {
            brokers: brokers.to_string(),
            influx,
            token_file: None,
            registry: registry.to_path_buf(),
            model: model.to_string(),
            run: run.to_string(),
            extra: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// A running `maintcast ingest`, SIGKILLed if the test ends first.
pub struct IngestProcess {
    child: Child,
    pub metrics: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl IngestProcess {
    pub fn spawn(args: &IngestArgs) -> IngestProcess {
        let dir = tempfile::tempdir().expect("log dir");
        let log = dir.path().join("ingest.log");
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let run = &args.run;
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let mut cmd = Command::new(maintcast_bin());
        cmd.args(["ingest", "--brokers", &args.brokers])
            .arg("--group-id")
            .arg(format!("{run}-group"));
        for topic in ["telemetry", "events", "dlq", "alerts", "checkpoint"] {
            cmd.arg(format!("--{topic}-topic"))
                .arg(format!("{run}-{topic}"));
        }
        cmd.arg("--registry")
            .arg(&args.registry)
            .args(["--model", &args.model])
            .args(["--batch-size", "16", "--commit-interval", "500ms"])
            .arg("--http-addr")
            .arg(metrics.to_string())
            .args(&args.extra)
            .env("MAINTCAST_INFLUX_URL", &args.influx.url)
            .env("MAINTCAST_INFLUX_ORG", &args.influx.org)
            .env("MAINTCAST_INFLUX_BUCKET", &args.influx.bucket)
            .env_remove("MAINTCAST_INFLUX_TOKEN")
            .env_remove("MAINTCAST_INFLUX_TOKEN_FILE")
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .envs(args.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        match &args.token_file {
            Some(f) => cmd.env("MAINTCAST_INFLUX_TOKEN_FILE", f),
            None => cmd.env("MAINTCAST_INFLUX_TOKEN", &args.influx.token),
        };
        let child = cmd.spawn().expect("start maintcast ingest");
        IngestProcess {
            child,
            metrics,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waiting on maintcast ingest")
    }

    /// Panics, with the log's tail, if the process has ended.
    pub fn assert_running(&mut self, when: &str) {
        if let Some(status) = self.exited() {
            panic!(
                "maintcast ingest exited {when}: {status:?}\n{}",
                self.log_tail(40)
            );
        }
    }

    /// Resident memory in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill_9(&mut self) -> ExitStatus {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaping maintcast ingest")
    }

    /// SIGTERM, then wait up to `timeout` for the exit.
    pub async fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let term = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill -TERM");
        assert!(term.success(), "kill -TERM {}", self.pid());
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.exited() {
                return s;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no exit {timeout:?} after SIGTERM\n{}",
                self.log_tail(40)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// SIGTERM, and the clean exit it must bring within a minute (drained, committed).
    pub async fn stop_cleanly(&mut self) {
        let status = self.terminate(Duration::from_secs(60)).await;
        assert!(
            status.success(),
            "exit after SIGTERM: {status:?}\n{}",
            self.log_tail(30)
        );
    }

    /// The last `n` lines the process logged.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        format!(
            "--- last log lines of pid {}:\n{}",
            self.pid(),
            diag::tail(&text, n)
        )
    }

    /// Its readiness, metrics and last log lines.
    pub async fn describe(&self) -> String {
        format!(
            "{}\n{}",
            diag::service_state(self.metrics).await,
            self.log_tail(20)
        )
    }
}

impl Drop for IngestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` in /proc/PID/status); 0 once it is gone.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}
