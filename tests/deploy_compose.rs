//! docker-compose.yml, docker-compose.gpu.yml, the Dockerfiles and the Prometheus and Grafana
//! provisioning agree with one another and with the `maintcast` binary itself: every maintcast
//! service's subcommand, flags and MAINTCAST_* variables are read from the built binary's
//! `--help` (never listed here), so a renamed flag breaks this test rather than the stack.
//! No Docker engine is needed; what only a Docker engine can check is listed in README.md.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use maintcast_e2e::compose::{
    self, environment, is_maintcast, load_compose, logical_lines, read, repo, services, strings,
};
use serde_norway::Value;

// ---------------------------------------------------------------------------------------------
// The binary's own flags

/// Builds `maintcast` (a no-op when the suite's build already did) and returns its path.
fn maintcast() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(repo())
            .args([
                "build",
                "-p",
                "maintcast",
                "--bin",
                "maintcast",
                "--message-format=json",
            ])
            .output()
            .expect("run cargo build -p maintcast");
        assert!(
            out.status.success(),
            "cargo build -p maintcast failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "maintcast")
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported no maintcast executable")
    })
}

fn help(args: &[&str]) -> String {
    let out = Command::new(maintcast())
        .args(args)
        .arg("--help")
        .output()
        .expect("run maintcast --help");
    assert!(
        out.status.success(),
        "maintcast {} --help failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What one subcommand accepts, as its `--help` says.
struct Cli {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn cli(sub: &str) -> Cli {
    let text = help(&[sub]);
    let mut flags = BTreeSet::new();
    let mut env = BTreeSet::new();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('-') {
            for word in line.split([' ', ',', '=', '<', '[']) {
                if let Some(name) = word.strip_prefix("--").filter(|n| !n.is_empty()) {
                    flags.insert(name.to_string());
                }
            }
        }
        let mut s = line;
        while let Some(i) = s.find("[env: ") {
            s = &s[i + 6..];
            let end = s.find(['=', ']']).unwrap_or(s.len());
            env.insert(s[..end].to_string());
        }
    }
    Cli { flags, env }
}

fn subcommands() -> BTreeSet<String> {
    let text = help(&[]);
    let section = text
        .split("Commands:")
        .nth(1)
        .expect("maintcast --help lists its commands");
    section
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

/// Variables read straight from the environment rather than through a flag (the InfluxDB
/// connection and token in services/common, the entrypoint's in deploy/docker): a
/// `var("X"` / `secret_from_env("X"` call in Rust or `${X` in a shell script.
fn read_from_env_in_sources(var: &str) -> bool {
    static SOURCES: OnceLock<String> = OnceLock::new();
    let sources = SOURCES.get_or_init(|| {
        let mut all = String::new();
        for dir in ["services", "models/src", "deploy/docker"] {
            collect_sources(&repo().join(dir), &mut all);
        }
        all
    });
    // A literal in a read, not anywhere: a test fixture naming a variable does not read it.
    let quoted = |v: &str| {
        ["var(\"", "secret_from_env(\""]
            .iter()
            .any(|call| sources.contains(&format!("{call}{v}\"")))
            || sources.contains(&format!("${{{v}"))
    };
    // secret_from_env("X") also reads the file named by X_FILE.
    quoted(var) || var.strip_suffix("_FILE").is_some_and(quoted)
}

fn collect_sources(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            collect_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs" || x == "sh") {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
}

// ---------------------------------------------------------------------------------------------

#[test]
fn compose_maintcast_services_match_the_binary_flags() {
    let mut errors = Vec::new();
    let base = load_compose("docker-compose.yml", &mut errors);
    let gpu = load_compose("docker-compose.gpu.yml", &mut errors);
    let known = subcommands();
    let mut clis: BTreeMap<String, Cli> = BTreeMap::new();
    let mut checked = 0;
    let gpu_services = services(&gpu);
    for (name, svc) in services(&base) {
        if !is_maintcast(&svc) {
            continue;
        }
        let command = strings(&svc["command"]);
        let Some(sub) = command.first() else {
            errors.push(format!(
                "service {name}: no maintcast subcommand in `command`"
            ));
            continue;
        };
        if !known.contains(sub) {
            errors.push(format!(
                "service {name}: `maintcast {sub}` does not exist (the binary has {known:?})"
            ));
            continue;
        }
        let cli = clis.entry(sub.clone()).or_insert_with(|| cli(sub));
        // Only --help (and the global --log-json) means the subcommand's Args are still empty.
        let stub = cli.flags.iter().all(|f| f == "help" || f == "log-json");
        let stub_note = if stub {
            format!(" (`maintcast {sub}` is still a stub: its --help lists no options)")
        } else {
            String::new()
        };
        for word in &command[1..] {
            if let Some(flag) = word.strip_prefix("--") {
                let flag = flag.split('=').next().unwrap();
                if !cli.flags.contains(flag) {
                    errors.push(format!(
                        "service {name}: `maintcast {sub}` has no flag --{flag}{stub_note}"
                    ));
                }
            }
        }
        let mut env = environment(&svc);
        if let Some(g) = gpu_services.get(&name) {
            env.extend(environment(g));
        }
        for var in env.keys().filter(|k| k.starts_with("MAINTCAST_")) {
            if !cli.env.contains(var) && !read_from_env_in_sources(var) {
                errors.push(format!(
                    "service {name}: {var} is neither a flag's variable in `maintcast {sub} --help` nor read from the environment by the sources{stub_note}"
                ));
            }
        }
        checked += 1;
    }
    assert!(
        checked >= 3,
        "expected ingest, trainer and simulator to run maintcast, found {checked}"
    );
    // The images set these for every subcommand.
    for dockerfile in ["deploy/docker/Dockerfile", "deploy/docker/Dockerfile.cuda"] {
        for var in dockerfile_env(&read(dockerfile)) {
            let by_flag = clis.values().any(|c| c.env.contains(&var));
            if !by_flag && !read_from_env_in_sources(&var) {
                errors.push(format!(
                    "{dockerfile}: ENV {var} is read by no subcommand in compose and no source"
                ));
            }
        }
    }
    assert!(
        errors.is_empty(),
        "docker-compose.yml disagrees with maintcast:\n  {}",
        errors.join("\n  ")
    );
}

fn dockerfile_env(text: &str) -> Vec<String> {
    compose::dockerfile_env(text)
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| k.starts_with("MAINTCAST_"))
        .collect()
}

/// Every `cargo <verb> ...` invocation in `text`, up to the end of its shell command.
fn cargo_commands(text: &str, verb: &str) -> Vec<String> {
    let needle = format!("cargo {verb} ");
    logical_lines(text)
        .iter()
        .flat_map(|l| {
            l.match_indices(&needle)
                .map(|(i, _)| {
                    let cmd = &l[i..];
                    let end = cmd.find(['&', ';', '|', ')']).unwrap_or(cmd.len());
                    cmd[..end].split_whitespace().collect::<Vec<_>>().join(" ")
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn dockerfiles_build_what_ci_builds() {
    let mut ci_builds = cargo_commands(&read(".ci/run"), "build");
    for e in std::fs::read_dir(repo().join("deploy")).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "sh") {
            ci_builds.extend(cargo_commands(
                &std::fs::read_to_string(e.path()).unwrap(),
                "build",
            ));
        }
    }
    let cpu_text = read("deploy/docker/Dockerfile");
    let cuda_text = read("deploy/docker/Dockerfile.cuda");
    let cpu = cargo_commands(&cpu_text, "build");
    let cuda = cargo_commands(&cuda_text, "build");
    assert_eq!(
        cpu.len(),
        1,
        "deploy/docker/Dockerfile: expected one cargo build, found {cpu:?}"
    );
    assert_eq!(
        cuda.len(),
        1,
        "deploy/docker/Dockerfile.cuda: expected one cargo build, found {cuda:?}"
    );
    assert!(
        ci_builds.contains(&cpu[0]),
        "the CPU image builds `{}` but .ci/run and deploy/*.sh build {ci_builds:?}",
        cpu[0]
    );
    assert_eq!(
        cuda[0],
        format!("{} --features cuda", cpu[0]),
        "the CUDA image builds CI's command plus --features cuda"
    );

    for (file, text, build) in [
        ("Dockerfile", &cpu_text, &cpu[0]),
        ("Dockerfile.cuda", &cuda_text, &cuda[0]),
    ] {
        // The cached dependency layer is built with the same profile, package and features.
        let cook = cargo_commands(text, "chef cook");
        let want =
            build.replacen("cargo build", "cargo chef cook", 1) + " --recipe-path recipe.json";
        assert_eq!(
            cook,
            vec![want],
            "{file}: cargo chef cook must mirror the build"
        );
        let lines = logical_lines(text);
        assert!(
            lines.iter().filter(|l| l.starts_with("FROM ")).count() >= 3,
            "{file}: multi-stage"
        );
        let user = lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("USER "))
            .unwrap_or("root");
        assert!(
            !user.starts_with("root") && !user.starts_with('0'),
            "{file}: the runtime user is {user}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("COPY models/pretrained ")),
            "{file}: the pretrained model is copied into the image"
        );
        for l in lines
            .iter()
            .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        {
            let src = l
                .split_whitespace()
                .filter(|w| !w.starts_with("--"))
                .nth(1)
                .unwrap();
            if src != "." && src != "models/pretrained" {
                assert!(
                    repo().join(src).exists(),
                    "{file}: COPY source {src} does not exist"
                );
            }
        }
    }
}

#[test]
fn compose_references_resolve() {
    let mut errors = Vec::new();
    let base = load_compose("docker-compose.yml", &mut errors);
    let gpu = load_compose("docker-compose.gpu.yml", &mut errors);
    let svcs = services(&base);
    let declared = |key: &str| -> BTreeSet<String> {
        base[key]
            .as_mapping()
            .map(|m| {
                m.keys()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let volumes = declared("volumes");
    let secrets = declared("secrets");
    for want in [
        "kafka",
        "kafka-init",
        "influxdb",
        "grafana",
        "prometheus",
        "ingest",
        "trainer",
        "simulator",
    ] {
        if !svcs.contains_key(want) {
            errors.push(format!("service {want} is missing"));
        }
    }
    for (name, svc) in &svcs {
        if svc["image"].as_str().is_none_or(str::is_empty) {
            errors.push(format!("{name}: no image"));
        }
        if let Some(df) = svc["build"]["dockerfile"].as_str()
            && !repo().join(df).is_file()
        {
            errors.push(format!("{name}: Dockerfile {df} does not exist"));
        }
        if let Some(deps) = svc["depends_on"].as_mapping() {
            for (dep, cond) in deps {
                let dep = dep.as_str().unwrap();
                let condition = cond["condition"].as_str().unwrap_or("service_started");
                match svcs.get(dep) {
                    None => errors.push(format!("{name}: depends on undefined service {dep}")),
                    Some(d) => match condition {
                        "service_healthy" if d["healthcheck"].is_null() => errors.push(format!(
                            "{name}: waits for {dep} to be healthy but {dep} has no healthcheck"
                        )),
                        "service_completed_successfully" if d["restart"].as_str() != Some("no") => {
                            errors.push(format!(
                                "{name}: waits for one-shot {dep} to complete, which restarts"
                            ))
                        }
                        "service_healthy"
                        | "service_completed_successfully"
                        | "service_started" => {}
                        other => {
                            errors.push(format!("{name}: unknown depends_on condition {other}"))
                        }
                    },
                }
                // A profile-less service must not wait for one that only runs under a profile.
                if svc["profiles"].is_null()
                    && svcs.get(dep).is_some_and(|d| !d["profiles"].is_null())
                {
                    errors.push(format!(
                        "{name}: depends on {dep}, which only runs under a profile"
                    ));
                }
            }
        }
        for v in strings(&svc["volumes"]) {
            let src = v.split(':').next().unwrap();
            if src.starts_with('.') || src.starts_with('/') {
                if !repo().join(src).exists() {
                    errors.push(format!(
                        "{name}: bind mount {src} does not exist in the repository"
                    ));
                }
            } else if !volumes.contains(src) {
                errors.push(format!("{name}: named volume {src} is not declared"));
            }
        }
        for s in strings(&svc["secrets"]) {
            if !secrets.contains(&s) {
                errors.push(format!("{name}: secret {s} is not declared"));
            }
        }
        if svc["healthcheck"].is_null() && !["kafka-init", "simulator"].contains(&name.as_str()) {
            errors.push(format!(
                "{name}: long-running service without a healthcheck"
            ));
        }
        // Secrets never travel as flags or plain variables.
        for (k, v) in environment(svc) {
            if k.contains("TOKEN") && !k.ends_with("_FILE") {
                errors.push(format!("{name}: {k} passes a secret as a plain variable"));
            }
            if k.ends_with("_FILE")
                && v.starts_with("/run/secrets/")
                && !strings(&svc["secrets"]).iter().any(|s| v.ends_with(s))
            {
                errors.push(format!("{name}: {k}={v} but that secret is not mounted"));
            }
        }
    }
    for name in services(&gpu).keys() {
        if !svcs.contains_key(name) {
            errors.push(format!(
                "docker-compose.gpu.yml overrides undefined service {name}"
            ));
        }
    }
    let ingest_gpu = &services(&gpu)["ingest"];
    if ingest_gpu["build"]["dockerfile"].as_str() != Some("deploy/docker/Dockerfile.cuda")
        || ingest_gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"][0]
            .as_str()
            != Some("gpu")
    {
        errors.push(
            "docker-compose.gpu.yml: ingest must build Dockerfile.cuda and reserve a GPU".into(),
        );
    }
    // The simulator is demo-only; every topic DESIGN.md names is created.
    if strings(&svcs["simulator"]["profiles"]) != ["demo"] {
        errors.push("simulator must run under the `demo` profile only".into());
    }
    let init = strings(&svcs["kafka-init"]["command"]).join(" ");
    for topic in [
        "telemetry:",
        "maintenance-events:",
        "telemetry-dlq:",
        "maintenance-alerts:",
    ] {
        if !init.contains(topic) {
            errors.push(format!(
                "kafka-init does not create topic {}",
                topic.trim_end_matches(':')
            ));
        }
    }
    assert!(
        errors.is_empty(),
        "docker-compose files:\n  {}",
        errors.join("\n  ")
    );
}

#[test]
fn prometheus_and_grafana_see_the_services() {
    let mut errors = Vec::new();
    let base = load_compose("docker-compose.yml", &mut errors);
    let svcs = services(&base);
    // Prometheus scrapes each maintcast service on the port its MAINTCAST_HTTP_ADDR binds.
    let prom: Value = serde_norway::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    for job in prom["scrape_configs"].as_sequence().unwrap() {
        for target in job["static_configs"][0]["targets"].as_sequence().unwrap() {
            let (host, port) = target.as_str().unwrap().split_once(':').unwrap();
            if host == "localhost" {
                continue;
            }
            match svcs.get(host) {
                None => errors.push(format!(
                    "prometheus scrapes {host}, which is not a compose service"
                )),
                Some(s) => {
                    let addr = environment(s)
                        .get("MAINTCAST_HTTP_ADDR")
                        .cloned()
                        .unwrap_or_default();
                    if !addr.ends_with(&format!(":{port}")) {
                        errors.push(format!(
                            "prometheus scrapes {host}:{port} but it serves on {addr:?}"
                        ));
                    }
                }
            }
        }
    }
    // Every ${VAR} in Grafana's provisioning is set on the grafana service, and $__file paths are mounted secrets.
    let grafana = &svcs["grafana"];
    let genv = environment(grafana);
    let mounted: Vec<String> = strings(&grafana["secrets"])
        .iter()
        .map(|s| format!("/run/secrets/{s}"))
        .collect();
    for file in [
        "datasources/maintcast.yaml",
        "alerting/maintcast.yaml",
        "dashboards/maintcast.yaml",
    ] {
        let text = read(&format!("deploy/grafana/provisioning/{file}"));
        for (i, _) in text.match_indices("${") {
            let name = &text[i + 2..i + 2 + text[i + 2..].find('}').unwrap()];
            if !genv.contains_key(name) {
                errors.push(format!(
                    "grafana provisioning {file} reads ${{{name}}}, unset on the grafana service"
                ));
            }
        }
        for (i, _) in text.match_indices("$__file{") {
            let path = &text[i + 8..i + 8 + text[i + 8..].find('}').unwrap()];
            if !mounted.iter().any(|m| m == path) {
                errors.push(format!(
                    "grafana provisioning {file} reads {path}, not a mounted secret"
                ));
            }
        }
    }
    let dash_dir = strings(&grafana["volumes"])
        .into_iter()
        .find(|v| v.starts_with("./deploy/grafana/dashboards:"))
        .unwrap();
    let provider: Value = serde_norway::from_str(&read(
        "deploy/grafana/provisioning/dashboards/maintcast.yaml",
    ))
    .unwrap();
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .unwrap();
    if dash_dir.split(':').nth(1).is_none_or(|p| p != path) {
        errors.push(format!(
            "dashboards are mounted as {dash_dir} but the provider reads {path}"
        ));
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

/// The pipeline-health dashboard only charts metrics the ingest service registers
/// (prometheus-client adds `_total` to counters and `_bucket` to histograms).
#[test]
fn pipeline_dashboard_metrics_are_registered_by_ingest() {
    let dash = read("deploy/grafana/dashboards/pipeline-health.json");
    let mut sources = String::new();
    collect_sources(&repo().join("services/ingest/src"), &mut sources);
    assert!(
        sources.contains("\"maintcast_ingest\""),
        "the ingest service registers its metrics under maintcast_ingest"
    );
    let mut missing = Vec::new();
    let mut seen = 0;
    for (i, _) in dash.match_indices("maintcast_ingest_") {
        let name: String = dash[i + 17..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(&name);
        seen += 1;
        if !sources.contains(&format!("register(\"{base}\""))
            && !sources.contains(&format!("register(\n            \"{base}\""))
        {
            missing.push(name);
        }
    }
    assert!(
        seen >= 5,
        "the pipeline dashboard charts the ingest service's metrics"
    );
    assert!(
        missing.is_empty(),
        "pipeline-health.json charts metrics the ingest service does not register: {missing:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Prometheus: the alert rules, their unit tests, the version infra.sh builds

/// `maintcast_*` metric names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    expr.match_indices("maintcast_")
        .filter(|(i, _)| {
            *i == 0
                || !expr[..*i]
                    .chars()
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(i, _)| {
            expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect()
        })
        .collect()
}

/// Whether the service sources register `name` (prometheus-client adds `_total` to counters and
/// `_bucket`/`_sum`/`_count` to histograms; ingest registers under the `maintcast_ingest` prefix).
fn registered(name: &str) -> bool {
    static SOURCES: OnceLock<(String, String)> = OnceLock::new();
    let (ingest, trainer) = SOURCES.get_or_init(|| {
        let (mut i, mut t) = (String::new(), String::new());
        collect_sources(&repo().join("services/ingest/src"), &mut i);
        collect_sources(&repo().join("services/trainer/src"), &mut t);
        (i, t)
    });
    let base = ["_total", "_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name);
    match base.strip_prefix("maintcast_ingest_") {
        Some(short) => ingest.contains(&format!("\"{short}\"")),
        None => trainer.contains(&format!("\"{base}\"")),
    }
}

#[test]
fn every_alert_rule_is_unit_tested_and_reads_registered_metrics() {
    let rules: Value = serde_norway::from_str(&read("deploy/prometheus/alerts.yml")).unwrap();
    let tests: Value = serde_norway::from_str(&read("deploy/prometheus/alerts.test.yml")).unwrap();
    assert_eq!(strings(&tests["rule_files"]), ["alerts.yml"]);
    // alertname -> (a case where it fires, a case where it stays quiet)
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = a["alertname"].as_str().unwrap().to_string();
            let fires = a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty());
            let e = cases.entry(name).or_default();
            if fires {
                e.0 = true;
            } else {
                e.1 = true;
            }
        }
    }
    let mut errors = Vec::new();
    let mut n = 0;
    for g in rules["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let Some(alert) = r["alert"].as_str() else {
                continue;
            };
            n += 1;
            match cases.get(alert) {
                Some((true, true)) => {}
                other => errors.push(format!(
                    "{alert}: alerts.test.yml must show it firing and quiet, has {other:?}"
                )),
            }
            for m in metric_names(r["expr"].as_str().unwrap()) {
                if !registered(&m) {
                    errors.push(format!("{alert}: {m} is registered by no service"));
                }
            }
            if r["annotations"]["summary"]
                .as_str()
                .is_none_or(str::is_empty)
            {
                errors.push(format!("{alert}: no summary"));
            }
        }
    }
    assert!(n >= 9, "the pipeline's alerts");
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    // CI runs the unit tests.
    let ci = read(".ci/run");
    assert!(
        ci.contains("promtool test rules deploy/prometheus/alerts.test.yml"),
        ".ci/run runs promtool test rules"
    );
}

#[test]
fn compose_prometheus_loads_the_alerts_and_matches_the_version_ci_builds() {
    let mut errors = Vec::new();
    let base = load_compose("docker-compose.yml", &mut errors);
    let prom = &services(&base)["prometheus"];
    let config: Value = serde_norway::from_str(&read("deploy/prometheus/prometheus.yml")).unwrap();
    let mounts: BTreeMap<String, String> = strings(&prom["volumes"])
        .iter()
        .filter_map(|v| {
            let mut p = v.split(':');
            Some((p.nth(1)?.to_string(), v.split(':').next()?.to_string()))
        })
        .collect();
    let config_file = strings(&prom["command"])
        .iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_string))
        .expect("--config.file");
    let config_dir = Path::new(&config_file).parent().unwrap();
    for rule_file in strings(&config["rule_files"]) {
        let in_container = config_dir.join(&rule_file);
        let source = mounts.get(in_container.to_str().unwrap());
        assert_eq!(
            source.map(String::as_str),
            Some("./deploy/prometheus/alerts.yml"),
            "compose mounts {rule_file} where prometheus.yml reads it"
        );
    }
    assert!(!strings(&config["rule_files"]).is_empty());
    // infra.sh builds the release compose runs, from its Go module version (3.M.P = v0.3MM.P).
    let image = prom["image"].as_str().unwrap();
    let tag = image.rsplit_once(":v").unwrap().1;
    let infra = read("deploy/infra.sh");
    let pinned = |var: &str| {
        infra
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=${{MAINTCAST_{var}:-")))
            .map(|v| v.trim_end_matches('}').to_string())
            .unwrap_or_else(|| panic!("deploy/infra.sh pins {var}"))
    };
    assert_eq!(pinned("PROMETHEUS_VERSION"), tag, "{image}");
    let mut v = tag.split('.').map(|x| x.parse::<u32>().unwrap());
    let (major, minor, patch) = (v.next().unwrap(), v.next().unwrap(), v.next().unwrap());
    assert_eq!(major, 3);
    assert_eq!(
        pinned("PROMETHEUS_MODULE_VERSION"),
        format!("v0.{}.{patch}", 300 + minor)
    );
    assert!(errors.is_empty(), "{errors:?}");
}
