//! The shipped stack runs as shipped. Every maintcast service docker-compose.yml defines (ingest,
//! trainer, simulator) runs here as a process of the `maintcast` binary, started through the
//! image's entrypoint with the service's compose `command`, the image's `ENV` and the service's
//! `environment` (interpolated from `.env.example`), against the real Kafka, InfluxDB and
//! Prometheus of `deploy/infra.sh start`. There is no Docker engine, so what a container would
//! provide is mapped, and only that:
//!
//! - host names: `kafka:9092` -> the local broker, `http://influxdb:8086` -> the local InfluxDB;
//! - secrets: `/run/secrets/<name>` -> a 0600 file holding the local token;
//! - named volumes: their mount paths -> directories of a temporary root, shared by the services
//!   that mount the same volume (ingest and trainer share the model registry); any other path is
//!   the service's own container file system, also under that root;
//! - image files: the Dockerfile's `COPY src dest` -> `src` in the repository (the pretrained
//!   model, the recipes, the entrypoint); the entrypoint's `/usr/local/bin/maintcast` -> the
//!   binary of this build (`MAINTCAST_BIN`);
//! - `MAINTCAST_HTTP_ADDR=0.0.0.0:P` -> a free loopback port; Prometheus's targets follow;
//! - names that other runs of the suite would share get unique values: in `.env` terms where
//!   compose reads one (`INFLUXDB_BUCKET`), as extra variables where compose leaves the binary's
//!   default (`MAINTCAST_{TELEMETRY,EVENTS,DLQ,ALERTS,CHECKPOINT}_TOPIC`, `MAINTCAST_GROUP_ID`);
//!   the topics are created as kafka-init creates them, with its partition counts;
//! - `.env` sized for a 2-core CI machine: `MAINTCAST_DEMO_MACHINES=6`; everything else as in
//!   `.env.example` (30 days of backfill, hourly rows, the trainer's 24h period).
//!
//! The environment is cleared first: a variable compose forgets is missing here as it would be
//! in the container. Then: ingest becomes ready; the demo simulator's backfill reaches InfluxDB as
//! telemetry, maintenance events and forecasts inside the dashboards' default time range and
//! never in the future; the trainer completes a round on that history; Prometheus, scraping with
//! deploy/prometheus/prometheus.yml's jobs and evaluating deploy/prometheus/alerts.yml, serves
//! every series the pipeline dashboard charts and fires the model-refused alert when an
//! incompatible model is promoted; SIGTERM stops each service cleanly.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use maintcast_e2e::compose::{self, environment, load_compose_with, read, repo, services, strings};
use maintcast_e2e::prometheus::Prometheus;
use maintcast_e2e::{InfluxEnv, create_topic, influx, kafka_brokers, unique};
use serde_norway::Value;

/// The demo fleet, small enough for 2 cores.
const MACHINES: usize = 6;

/// A service of the stack running as a process, its output in a log file.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Fails the test, with the service's log, if it has exited.
    fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}) while it should run:\n{}",
                self.name,
                self.log_tail()
            );
        }
    }

    /// `docker stop`: SIGTERM, then the exit status (SIGKILL after `grace`).
    fn stop(&mut self, grace: Duration) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// docker-compose.yml with the local mappings of the module comment.
struct Stack {
    root: tempfile::TempDir,
    run: String,
    services: BTreeMap<String, Value>,
    declared_volumes: Vec<String>,
    image_env: Vec<(String, String)>,
    /// (image path, repository path), from the Dockerfile's COPY lines.
    image_files: Vec<(String, String)>,
    entrypoint: PathBuf,
    /// Container host:port -> local address.
    hosts: Vec<(String, String)>,
    /// Variables the test adds for names compose leaves at the binary's defaults.
    extra: BTreeMap<String, String>,
    /// Service -> the loopback port its MAINTCAST_HTTP_ADDR maps to.
    ports: BTreeMap<String, u16>,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Stack {
    fn new(env: &InfluxEnv, brokers: &str, run: &str) -> Stack {
        let overrides: BTreeMap<String, String> = [
            ("INFLUXDB_BUCKET", env.bucket.clone()),
            ("INFLUXDB_ORG", env.org.clone()),
            ("MAINTCAST_DEMO_MACHINES", MACHINES.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut errors = Vec::new();
        let base = load_compose_with("docker-compose.yml", &overrides, &mut errors);
        assert!(errors.is_empty(), "docker-compose.yml: {errors:?}");
        let services = services(&base);
        let dockerfile = read("deploy/docker/Dockerfile");
        let entrypoint = repo().join(
            compose::dockerfile_entrypoint(&dockerfile)
                .expect("the image's ENTRYPOINT is a script copied from the repository"),
        );
        let root = tempfile::tempdir().unwrap();
        // The secret as compose makes it: a file holding INFLUXDB_TOKEN's value.
        let secrets = root.path().join("secrets");
        std::fs::create_dir_all(&secrets).unwrap();
        for name in base["secrets"].as_mapping().expect("secrets").keys() {
            let path = secrets.join(name.as_str().unwrap());
            std::fs::write(&path, &env.token).unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        let extra = [
            ("MAINTCAST_TELEMETRY_TOPIC", "telemetry"),
            ("MAINTCAST_EVENTS_TOPIC", "maintenance-events"),
            ("MAINTCAST_DLQ_TOPIC", "telemetry-dlq"),
            ("MAINTCAST_ALERTS_TOPIC", "maintenance-alerts"),
            ("MAINTCAST_CHECKPOINT_TOPIC", "ingest-windows-checkpoint"),
            ("MAINTCAST_GROUP_ID", "maintcast-ingest"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), format!("{run}-{v}")))
        .collect();
        let ports = services
            .keys()
            .map(|name| (name.clone(), free_port()))
            .collect();
        Stack {
            run: run.to_string(),
            declared_volumes: base["volumes"]
                .as_mapping()
                .map(|m| {
                    m.keys()
                        .filter_map(|k| k.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default(),
            services,
            image_env: compose::dockerfile_env(&dockerfile),
            image_files: compose::dockerfile_copies(&dockerfile),
            entrypoint,
            hosts: vec![
                ("http://influxdb:8086".into(), env.url.clone()),
                ("kafka:9092".into(), brokers.to_string()),
            ],
            extra,
            ports,
            root,
        }
    }

    fn topic(&self, name: &str) -> String {
        format!("{}-{name}", self.run)
    }

    /// kafka-init's topics (`name:partitions` in its command's `for spec in ...; do` list),
    /// under this run's names. Only that list: the command's `kafka:9092` also looks like a
    /// spec, and once made a 9,092-partition topic per run until the broker ran out of files.
    async fn create_topics(&self, brokers: &str) {
        let init = strings(&self.services["kafka-init"]["command"]).join(" ");
        let list = init
            .split_once("for spec in ")
            .and_then(|(_, rest)| rest.split_once(';'))
            .map(|(list, _)| list)
            .unwrap_or_else(|| panic!("kafka-init loops over its topics: {init}"));
        let mut n = 0;
        for word in list.split_whitespace() {
            let (name, parts) = word
                .split_once(':')
                .unwrap_or_else(|| panic!("{word}: not name:partitions"));
            let parts: i32 = parts
                .parse()
                .unwrap_or_else(|_| panic!("{word}: partitions not a number"));
            assert!((1..=64).contains(&parts), "{word}: partitions");
            create_topic(brokers, &self.topic(name), parts).await;
            n += 1;
        }
        assert!(n >= 4, "kafka-init creates the topics: {init}");
    }

    /// Where a container path of `service` lives here.
    fn path(&self, service: &str, container: &str) -> String {
        let svc = &self.services[service];
        let mut best: Option<(usize, PathBuf)> = None;
        let mut consider = |prefix: &str, local: PathBuf| {
            let matches = container == prefix
                || container.starts_with(&format!("{}/", prefix.trim_end_matches('/')));
            if matches && best.as_ref().is_none_or(|(l, _)| prefix.len() > *l) {
                let rest = container[prefix.len()..].trim_start_matches('/');
                let path = if rest.is_empty() {
                    local
                } else {
                    local.join(rest)
                };
                best = Some((prefix.len(), path));
            }
        };
        for s in strings(&svc["secrets"]) {
            consider(
                &format!("/run/secrets/{s}"),
                self.root.path().join("secrets").join(&s),
            );
        }
        for v in strings(&svc["volumes"]) {
            let mut parts = v.split(':');
            let (src, dest) = (parts.next().unwrap(), parts.next().unwrap_or_default());
            let local = if src.starts_with('.') || src.starts_with('/') {
                repo().join(src)
            } else {
                assert!(self.declared_volumes.iter().any(|d| d == src));
                self.root.path().join("volumes").join(src)
            };
            consider(dest, local);
        }
        for (src, dest) in &self.image_files {
            consider(dest, repo().join(src));
        }
        match best {
            Some((_, p)) => p.to_string_lossy().into_owned(),
            // The container's own file system.
            None => self
                .root
                .path()
                .join("containers")
                .join(service)
                .join(container.trim_start_matches('/'))
                .to_string_lossy()
                .into_owned(),
        }
    }

    fn map_value(&self, service: &str, value: &str) -> String {
        let mut v = value.to_string();
        for (from, to) in &self.hosts {
            v = v.replace(from, to);
        }
        if let Some(port) = v.strip_prefix("0.0.0.0:") {
            assert!(port.parse::<u16>().is_ok(), "{v}");
            v = format!("127.0.0.1:{}", self.ports[service]);
        }
        if v.starts_with('/') {
            v = self.path(service, &v);
        }
        // Anything still naming another compose service has no local counterpart.
        for other in self.services.keys() {
            assert!(
                !v.contains(&format!("//{other}:")) && !v.starts_with(&format!("{other}:")),
                "service {service}: {value:?} names service {other}, which the test does not map"
            );
        }
        v
    }

    /// The service's environment as the container sees it, mapped.
    fn env(&self, service: &str) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = self.image_env.iter().cloned().collect();
        env.extend(environment(&self.services[service]));
        for (k, v) in &self.extra {
            assert!(
                !env.contains_key(k),
                "compose now sets {k}: the test must stop overriding it"
            );
            env.insert(k.clone(), v.clone());
        }
        env.into_iter()
            .map(|(k, v)| {
                let v = self.map_value(service, &v);
                (k, v)
            })
            .collect()
    }

    fn start(&self, service: &str) -> Proc {
        let svc = &self.services[service];
        assert!(
            compose::is_maintcast(svc),
            "{service} does not run the maintcast image"
        );
        let args: Vec<String> = strings(&svc["command"])
            .iter()
            .map(|a| self.map_value(service, a))
            .collect();
        let env = self.env(service);
        let workdir = self.path(service, "/var/lib/maintcast");
        std::fs::create_dir_all(&workdir).unwrap();
        // Named volumes exist (empty) before the container starts, as Docker creates them.
        for v in strings(&svc["volumes"]) {
            let dest = v.split(':').nth(1).unwrap_or_default();
            std::fs::create_dir_all(self.path(service, dest)).unwrap();
        }
        let log = self.root.path().join(format!("{service}.log"));
        let out = File::create(&log).unwrap();
        eprintln!("starting {service}: maintcast {}", args.join(" "));
        let child = Command::new("sh")
            .arg(&self.entrypoint)
            .args(&args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", &workdir)
            .env("MAINTCAST_BIN", maintcast_e2e::fleet::maintcast_bin())
            .envs(&env)
            .current_dir(&workdir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {service}: {e}"));
        Proc {
            name: service.to_string(),
            child,
            log,
        }
    }

    fn url(&self, service: &str, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ports[service])
    }
}

/// Polls `check` until it returns Some, failing with `what` and the services' logs after `limit`
/// or as soon as one of `procs` exits.
async fn wait_for<T, F, Fut>(
    what: &str,
    limit: Duration,
    procs: &mut [&mut Proc],
    mut check: F,
) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        for p in procs.iter_mut() {
            p.assert_running();
        }
        if Instant::now() > deadline {
            let logs: Vec<String> = procs
                .iter()
                .map(|p| format!("--- {}:\n{}", p.name, p.log_tail()))
                .collect();
            panic!(
                "timed out after {limit:?} waiting for {what}\n{}",
                logs.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let r = reqwest::get(url).await.ok()?;
    let status = r.status().as_u16();
    Some((status, r.text().await.ok()?))
}

/// `name{labels} value` lines of a /metrics body whose name and labels contain `needle`.
fn metric_lines<'a>(body: &'a str, needle: &str) -> Vec<&'a str> {
    body.lines()
        .filter(|l| !l.starts_with('#') && l.contains(needle))
        .collect()
}

/// The dashboards' default range (`"time": {"from": "now-7d"}`) in Flux terms (`-7d`).
fn dashboard_range(file: &str) -> String {
    let d: serde_json::Value = serde_json::from_str(&read(file)).unwrap();
    let from = d["time"]["from"].as_str().unwrap();
    format!(
        "-{}",
        from.strip_prefix("now-")
            .unwrap_or_else(|| panic!("{file}: time.from {from}"))
    )
}

/// Adds `stack="<run>"` to every maintcast metric selector (and `up`) of a dashboard query, so
/// that it reads this run's series only, in a Prometheus that other runs may share.
fn scoped(expr: &str, run: &str) -> String {
    let mut out = String::new();
    let mut rest = expr;
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    while let Some(i) = rest.find(|c: char| c.is_ascii_alphabetic() || c == '_') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let end = rest.find(|c: char| !is_ident(c)).unwrap_or(rest.len());
        let (name, tail) = rest.split_at(end);
        out.push_str(name);
        rest = tail;
        if name.starts_with("maintcast_") || name == "up" {
            if let Some(t) = rest.strip_prefix('{') {
                out.push_str(&format!("{{stack=\"{run}\","));
                rest = t;
            } else {
                out.push_str(&format!("{{stack=\"{run}\"}}"));
            }
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn scoped_adds_the_stack_to_every_selector() {
    assert_eq!(
        scoped(
            r#"sum by (le) (rate(maintcast_ingest_x_bucket[1m])) + up{job=~"maintcast-.*"}"#,
            "r"
        ),
        r#"sum by (le) (rate(maintcast_ingest_x_bucket{stack="r"}[1m])) + up{stack="r",job=~"maintcast-.*"}"#
    );
}

/// Prometheus's jobs of deploy/prometheus/prometheus.yml whose targets are compose services,
/// pointed at the local ports: scraped every second, relabelled with the original job name and
/// this run's `stack`.
fn scrape_config(stack: &Stack) -> String {
    let prom: Value = serde_norway::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    let mut jobs = Vec::new();
    for job in prom["scrape_configs"].as_sequence().unwrap() {
        let name = job["job_name"].as_str().unwrap();
        let targets: Vec<String> = strings(&job["static_configs"][0]["targets"]);
        let local: Vec<String> = targets
            .iter()
            .filter_map(|t| {
                let (host, _) = t.split_once(':')?;
                stack.ports.get(host).map(|p| format!("127.0.0.1:{p}"))
            })
            .collect();
        if local.is_empty() {
            continue;
        }
        jobs.push(serde_json::json!({
            "job_name": format!("{name}-{}", stack.run),
            "metrics_path": job["metrics_path"].as_str().unwrap_or("/metrics"),
            "scrape_interval": "1s",
            "scrape_timeout": "1s",
            "static_configs": [{"targets": local}],
            "relabel_configs": [
                {"target_label": "job", "replacement": name},
                {"target_label": "stack", "replacement": stack.run},
            ],
        }));
    }
    assert!(jobs.len() >= 2, "prometheus.yml scrapes ingest and trainer");
    serde_norway::to_string(&serde_json::json!({ "scrape_configs": jobs })).unwrap()
}

/// deploy/prometheus/alerts.yml, evaluated every second.
fn rules_config() -> String {
    let mut rules: Value = serde_norway::from_str(&read("deploy/prometheus/alerts.yml")).unwrap();
    for g in rules["groups"].as_sequence_mut().unwrap() {
        g["interval"] = Value::String("1s".into());
    }
    serde_norway::to_string(&rules).unwrap()
}

async fn count(env: &InfluxEnv, range: &str, filter: &str) -> usize {
    let rows = env
        .query(&format!(
            r#"from(bucket: "{}") |> range(start: {range})
               |> filter(fn: (r) => {filter})
               |> group() |> count()"#,
            env.bucket
        ))
        .await;
    rows.first()
        .and_then(|r| r.get("_value"))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The shipped model's window (models/pretrained): rows a machine needs after a reset before it
/// is forecast.
const WINDOW: usize = 60;

/// Machines with at least `window` telemetry rows in `range` after their last maintenance event.
async fn machines_with_a_window(env: &InfluxEnv, range: &str, window: usize) -> BTreeSet<String> {
    let times = |measurement: &str, range: &str| {
        format!(
            r#"from(bucket: "{}") |> range(start: {range}, stop: 2100-01-01T00:00:00Z)
               |> filter(fn: (r) => r._measurement == "{measurement}")
               |> keep(columns: ["machine_id", "_time"])"#,
            env.bucket
        )
    };
    let parse = |r: &std::collections::HashMap<String, String>| {
        let t = chrono::DateTime::parse_from_rfc3339(r.get("_time")?).ok()?;
        Some((r.get("machine_id")?.clone(), t.timestamp_millis()))
    };
    let mut last_event: BTreeMap<String, i64> = BTreeMap::new();
    for (m, t) in env
        .query(&times("maintenance_event", "0"))
        .await
        .iter()
        .filter_map(parse)
    {
        let e = last_event.entry(m).or_insert(t);
        *e = (*e).max(t);
    }
    let mut rows: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for (m, t) in env
        .query(&times("telemetry", range))
        .await
        .iter()
        .filter_map(parse)
    {
        if last_event.get(&m).is_none_or(|&e| t > e) {
            rows.entry(m).or_default().insert(t);
        }
    }
    rows.into_iter()
        .filter(|(_, ts)| ts.len() >= window)
        .map(|(m, _)| m)
        .collect()
}

/// Newest telemetry row per machine, epoch ms.
async fn newest_rows(env: &InfluxEnv) -> BTreeMap<String, i64> {
    env.query(&format!(
        r#"from(bucket: "{}") |> range(start: 0, stop: 2100-01-01T00:00:00Z)
           |> filter(fn: (r) => r._measurement == "telemetry")
           |> keep(columns: ["machine_id", "_time"])
           |> group(columns: ["machine_id"])
           |> sort(columns: ["_time"]) |> last(column: "_time")"#,
        env.bucket
    ))
    .await
    .into_iter()
    .filter_map(|r| {
        let t = chrono::DateTime::parse_from_rfc3339(r.get("_time")?).ok()?;
        Some((r.get("machine_id")?.clone(), t.timestamp_millis()))
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_services_run_as_processes_scraped_and_alerted_by_prometheus() {
    let brokers = kafka_brokers();
    let run = unique("stack");
    let env = influx().with_new_bucket(&run).await;
    let mut prometheus = Prometheus::shared().await;
    let stack = Stack::new(&env, &brokers, &run);
    stack.create_topics(&brokers).await;
    gpu_override_changes_only_the_device(&stack);

    // Prometheus first, so that it sees the whole backfill go through.
    prometheus.add("scrape", &run, &scrape_config(&stack)).await;
    prometheus.add("rules", &run, &rules_config()).await;

    // ingest: ready, then the demo fleet's history.
    let mut ingest = stack.start("ingest");
    let ready = stack.url("ingest", "/readyz");
    wait_for(
        "ingest /readyz",
        Duration::from_secs(120),
        &mut [&mut ingest],
        || async { get(&ready).await.filter(|(s, _)| *s == 200) },
    )
    .await;
    let seeded =
        Path::new(&stack.path("ingest", "/var/lib/maintcast/registry")).join("maintcast/CURRENT");
    assert!(
        seeded.exists(),
        "the entrypoint seeds the registry volume with the pretrained model"
    );

    let started_ms = chrono::Utc::now().timestamp_millis();
    let mut simulator = stack.start("simulator");
    let sim_env = stack.env("simulator");
    let interval_ms = humantime::parse_duration(&sim_env["MAINTCAST_INTERVAL"])
        .expect("MAINTCAST_INTERVAL")
        .as_millis() as i64;
    // The backfill is done when every machine's newest row is the current interval's (the
    // simulator drops a row now and then: allow one more).
    let newest = wait_for(
        "the simulator's backfill to reach InfluxDB up to now",
        Duration::from_secs(240),
        &mut [&mut ingest, &mut simulator],
        || async {
            let newest = newest_rows(&env).await;
            let now = chrono::Utc::now().timestamp_millis();
            (newest.len() == MACHINES
                && newest.values().all(|&t| t >= started_ms - 3 * interval_ms))
            .then_some((newest, now))
        },
    )
    .await;
    let (newest, now) = newest;
    for (machine, t) in &newest {
        assert!(*t <= now, "{machine}: a row stamped {t}, after now ({now})");
    }
    // What the dashboards show by default: telemetry and forecasts of every machine.
    for dash in [
        "deploy/grafana/dashboards/fleet-overview.json",
        "deploy/grafana/dashboards/machine-detail.json",
    ] {
        let range = dashboard_range(dash);
        for (what, measurement, field) in [
            ("telemetry", "telemetry", "bearing_temp_c"),
            ("forecasts", "maintenance_forecast", "days_to_maintenance"),
        ] {
            let flux = format!(
                r#"from(bucket: "{}") |> range(start: {range})
                   |> filter(fn: (r) => r._measurement == "{measurement}" and r._field == "{field}")
                   |> group(columns: ["machine_id"]) |> count()"#,
                env.bucket
            );
            // A machine has forecasts in the range once it has a window of rows there since
            // its last maintenance (the model does not pad): with random fleets, a machine
            // maintained in the last days may not yet, and is not expected to.
            let want: Option<BTreeSet<String>> = if measurement == "telemetry" {
                None
            } else {
                let due = machines_with_a_window(&env, &range, WINDOW).await;
                assert!(!due.is_empty(), "no machine has {WINDOW} rows in {range}");
                Some(due)
            };
            // Forecasts trail the rows they score by the inference queue.
            wait_for(
                &format!("{dash}'s range {range}: {what} of every machine due one ({want:?})"),
                Duration::from_secs(120),
                &mut [&mut ingest],
                || async {
                    let got: BTreeSet<String> = env
                        .query(&flux)
                        .await
                        .into_iter()
                        .filter_map(|r| r.get("machine_id").cloned())
                        .collect();
                    match &want {
                        None => got.len() == MACHINES,
                        Some(due) => due.is_subset(&got),
                    }
                    .then_some(())
                },
            )
            .await;
        }
    }
    let events = count(&env, "0", r#"r._measurement == "maintenance_event""#).await;
    assert!(
        events > 0,
        "the fleet's maintenance events reach InfluxDB (MAINTCAST_WRITE_RAW)"
    );

    // trainer: a round on the history ingest wrote.
    let mut trainer = stack.start("trainer");
    let trainer_metrics = stack.url("trainer", "/metrics");
    let outcome = wait_for(
        "a trainer round",
        Duration::from_secs(240),
        &mut [&mut ingest, &mut trainer],
        || async {
            let (_, body) = get(&trainer_metrics).await?;
            let lines = metric_lines(&body, "maintcast_trainer_rounds_total{");
            lines.first().map(|l| l.to_string())
        },
    )
    .await;
    assert!(
        outcome.contains("outcome=\"promoted\"") || outcome.contains("outcome=\"not_promoted\""),
        "the trainer's first round trains a challenger on the history: {outcome}\n{}",
        trainer.log_tail()
    );
    let registry = PathBuf::from(stack.path("trainer", "/var/lib/maintcast/registry"));
    assert!(
        registry.join("maintcast/v0002/model.json").exists(),
        "the challenger is published in the registry volume ingest serves from"
    );

    // Prometheus: both services up, and every series the pipeline dashboard charts.
    let dash: serde_json::Value =
        serde_json::from_str(&read("deploy/grafana/dashboards/pipeline-health.json")).unwrap();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for t in panel["targets"].as_array().into_iter().flatten() {
            if panel["datasource"]["type"] == "prometheus"
                && let Some(e) = t["expr"].as_str()
            {
                exprs.push(scoped(&e.replace("$__rate_interval", "1m"), &run));
            }
        }
    }
    assert!(
        exprs.len() >= 5,
        "the pipeline dashboard's Prometheus queries"
    );
    let up = format!("up{{stack=\"{run}\"}} == 1");
    wait_for(
        "both services scraped",
        Duration::from_secs(60),
        &mut [&mut ingest, &mut trainer],
        || async { (prometheus.query(&up).await.len() == 2).then_some(()) },
    )
    .await;
    for expr in &exprs {
        // Rejections are counted per reason once one happens: the demo fleet sends none.
        if expr.contains("messages_rejected") {
            prometheus.query(expr).await;
            continue;
        }
        wait_for(
            expr,
            Duration::from_secs(60),
            &mut [&mut ingest, &mut trainer],
            || async {
                let r = prometheus.query(expr).await;
                (!r.is_empty()).then_some(())
            },
        )
        .await;
    }

    // An incompatible model promoted into the registry ingest watches: refused, and alerted on.
    let firing = format!(
        "ALERTS{{alertname=\"MaintcastModelRefused\", alertstate=\"firing\", stack=\"{run}\"}}"
    );
    assert!(
        prometheus.query(&firing).await.is_empty(),
        "nothing refused yet"
    );
    let bad = maintcast_e2e::stream::publish_model(&registry, "maintcast", 3);
    // The registry's own check would refuse another layout; forced, as an operator can, so
    // that the running ingest is the one to refuse it.
    let forced = maintcast_models::registry::Servable {
        allow_layout_change: true,
    };
    maintcast_models::registry::promote_with(&registry, "maintcast", &bad, "test", &forced)
        .unwrap();
    // Ingest looks at CURRENT between inference batches (every reload interval at most); the
    // simulator's next row is up to an hour away, so rows of a machine with a full window come
    // now, one each time the alert is looked for.
    let due = machines_with_a_window(&env, "0", WINDOW).await;
    let machine = due.first().expect("a machine with a full window").clone();
    let producer = maintcast_e2e::stream::producer(&brokers);
    let telemetry = stack.topic("telemetry");
    wait_for(
        "the model-refused alert to fire",
        Duration::from_secs(90),
        &mut [&mut ingest, &mut trainer],
        || async {
            let row = format!(
                r#"{{"machine_id":"{machine}","ts":{},"sensors":{{"bearing_temp_c":60.0}}}}"#,
                chrono::Utc::now().timestamp_millis()
            );
            maintcast_e2e::stream::produce(&producer, &telemetry, &machine, row.as_bytes(), None)
                .await;
            (!prometheus.query(&firing).await.is_empty()).then_some(())
        },
    )
    .await;
    let (_, body) = get(&stack.url("ingest", "/metrics")).await.unwrap();
    assert_eq!(
        metric_lines(&body, "result=\"refused\"").len(),
        1,
        "ingest refused the model and kept serving"
    );

    // docker stop: SIGTERM, a clean exit.
    for p in [&mut simulator, &mut trainer, &mut ingest] {
        let status = p.stop(Duration::from_secs(60));
        assert!(
            status.is_some_and(|s| s.success()),
            "{} did not stop cleanly on SIGTERM ({status:?}):\n{}",
            p.name,
            p.log_tail()
        );
    }
    drop(prometheus);
    env.delete_bucket().await;
}

/// docker-compose.gpu.yml swaps the image and reserves a GPU; the services' commands and
/// variables stay those this test runs, but for the device.
fn gpu_override_changes_only_the_device(stack: &Stack) {
    let mut errors = Vec::new();
    let gpu = load_compose_with("docker-compose.gpu.yml", &BTreeMap::new(), &mut errors);
    assert!(errors.is_empty(), "{errors:?}");
    for (name, over) in services(&gpu) {
        assert!(stack.services.contains_key(&name), "{name}");
        assert!(
            over["command"].is_null(),
            "{name}: the GPU override keeps the command"
        );
        let keys: Vec<String> = environment(&over).into_keys().collect();
        assert_eq!(
            keys,
            ["MAINTCAST_DEVICE"],
            "{name}: the GPU override changes the device only"
        );
    }
}
