//! Private Kafka and InfluxDB instances for tests that stop or restart a server: started through
//! `deploy/infra.sh` with `MAINTCAST_INFRA_INSTANCE` (own ports, data and token file), stopped and
//! deleted when the [`Private`] is dropped, panics included, so the tests running beside them on
//! the shared servers never see the outage.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::{InfluxEnv, diag};

/// Which servers a private instance runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Servers {
    Kafka,
    InfluxDb,
    Both,
}

/// A private instance; dropped = stopped and wiped.
pub struct Private {
    name: String,
    servers: Servers,
    vars: HashMap<String, String>,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/infra.sh")
}

fn cache() -> PathBuf {
    match std::env::var("MAINTCAST_CACHE") {
        Ok(c) => PathBuf::from(c),
        Err(_) => PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache/maintcast"),
    }
}

/// Runs `deploy/infra.sh command` for instance `name` (`None`: commands that span instances,
/// such as `gc`); Err carries the script's output.
fn infra(name: Option<&str>, command: &str) -> Result<String, String> {
    let mut cmd = Command::new("bash");
    cmd.arg(script()).arg(command);
    match name {
        Some(n) => cmd
            .env("MAINTCAST_INFRA_INSTANCE", n)
            .env("MAINTCAST_INFRA_OWNER", std::process::id().to_string()),
        None => cmd.env_remove("MAINTCAST_INFRA_INSTANCE"),
    };
    let out = cmd
        .output()
        .map_err(|e| format!("running deploy/infra.sh {command}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "deploy/infra.sh {command} ({}) failed: {}{}",
            name.unwrap_or("all instances"),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Private {
    /// Starts `servers` in a new instance and waits until they accept connections (InfluxDB
    /// onboarded). Instances left by test processes that died are deleted first.
    pub async fn start(servers: Servers) -> Private {
        static GC: Once = Once::new();
        GC.call_once(|| {
            if let Err(e) = infra(None, "gc") {
                eprintln!("{e}");
            }
        });
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "t{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        // Constructed first, so that a failed start still wipes what it left.
        let mut p = Private {
            name,
            servers,
            vars: HashMap::new(),
        };
        if servers != Servers::InfluxDb {
            p.start_kafka().await;
        }
        if servers != Servers::Kafka {
            p.start_influxdb().await;
        }
        let env = p.run("env").await;
        p.vars = env
            .lines()
            .filter_map(|l| l.strip_prefix("export ")?.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        eprintln!(
            "[private instance {}] {servers:?}: Kafka {}, InfluxDB {}",
            p.name, p.vars["MAINTCAST_KAFKA_BROKERS"], p.vars["MAINTCAST_INFLUX_URL"]
        );
        p
    }

    async fn run(&self, command: &'static str) -> String {
        let name = self.name.clone();
        let result = tokio::task::spawn_blocking(move || infra(Some(&name), command))
            .await
            .expect("deploy/infra.sh task");
        result.unwrap_or_else(|e| {
            panic!(
                "{e}\n{}\n{}",
                self.log_tail("kafka.log", 20),
                self.log_tail("influxd.log", 20)
            )
        })
    }

    fn var(&self, name: &str) -> String {
        self.vars
            .get(name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} missing from `deploy/infra.sh env`"))
    }

    /// The private broker's bootstrap address.
    pub fn brokers(&self) -> String {
        assert_ne!(self.servers, Servers::InfluxDb, "no private Kafka started");
        self.var("MAINTCAST_KAFKA_BROKERS")
    }

    /// The file holding the private InfluxDB's token (0600).
    pub fn token_file(&self) -> PathBuf {
        assert_ne!(self.servers, Servers::Kafka, "no private InfluxDB started");
        PathBuf::from(self.var("MAINTCAST_INFLUX_TOKEN_FILE"))
    }

    /// The private InfluxDB.
    pub fn influx(&self) -> InfluxEnv {
        let file = self.token_file();
        let token = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()))
            .trim()
            .to_string();
        InfluxEnv {
            url: self.var("MAINTCAST_INFLUX_URL"),
            org: self.var("MAINTCAST_INFLUX_ORG"),
            bucket: self.var("MAINTCAST_INFLUX_BUCKET"),
            token,
        }
    }

    pub async fn stop_kafka(&self) {
        self.run("stop-kafka").await;
    }

    pub async fn start_kafka(&self) {
        self.run("start-kafka").await;
    }

    pub async fn stop_influxdb(&self) {
        self.run("stop-influxdb").await;
    }

    pub async fn start_influxdb(&self) {
        self.run("start-influxdb").await;
    }

    /// What the private broker holds: its topics' partitions and their leaders, as its metadata
    /// says, and the partition directories in its data directory.
    pub fn describe(&self) -> String {
        let mut out = format!("private instance {}:", self.name);
        if self.servers != Servers::InfluxDb {
            let probe: Result<BaseConsumer, _> = ClientConfig::new()
                .set("bootstrap.servers", self.brokers())
                .create();
            match probe.map(|p| p.fetch_metadata(None, Duration::from_secs(5))) {
                Ok(Ok(md)) => {
                    for t in md.topics() {
                        let leaders: Vec<i32> = t.partitions().iter().map(|p| p.leader()).collect();
                        out += &format!("\n  topic {} leaders {leaders:?}", t.name());
                    }
                }
                Ok(Err(e)) | Err(e) => out += &format!("\n  no metadata: {e}"),
            }
            let dir = cache().join(format!("data-{}", self.name)).join("kafka");
            let mut dirs: Vec<String> = std::fs::read_dir(&dir)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            dirs.sort();
            out += &format!("\n  {}: {dirs:?}", dir.display());
        }
        out
    }

    /// The last `n` lines of one of the instance's server logs (`kafka.log`, `influxd.log`).
    pub fn log_tail(&self, log: &str, n: usize) -> String {
        let path = cache().join(format!("run-{}", self.name)).join(log);
        match std::fs::read_to_string(&path) {
            Ok(text) => format!(
                "--- last lines of {}:\n{}",
                path.display(),
                diag::tail(&text, n)
            ),
            Err(_) => String::new(),
        }
    }
}

impl Drop for Private {
    fn drop(&mut self) {
        // MAINTCAST_KEEP_PRIVATE=1 keeps a failed test's servers and data to look into; `gc`
        // deletes them once this process is gone.
        if std::thread::panicking() && std::env::var("MAINTCAST_KEEP_PRIVATE").as_deref() == Ok("1")
        {
            eprintln!("kept private instance {} ({})", self.name, self.describe());
            return;
        }
        if let Err(e) = infra(Some(&self.name), "wipe") {
            eprintln!("{e}");
        }
    }
}
