//! The generated parts of docs/: configuration.md's tables of flags, rendered from the commands'
//! own definitions, and metrics.md's table, rendered from the services' Prometheus registries. So
//! the pages cannot drift from the code: `cargo test -p maintcast config_doc` fails when they do,
//! and `MAINTCAST_BLESS=1 cargo test -p maintcast config_doc` rewrites the generated parts.

use std::fmt::Write as _;

use clap::CommandFactory;

const END: &str = "<!-- END GENERATED -->";

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn table(out: &mut String, cmd: &clap::Command) {
    let args: Vec<&clap::Arg> = cmd
        .get_arguments()
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .collect();
    if args.is_empty() {
        out.push_str("No flags.\n\n");
        return;
    }
    out.push_str("| flag | environment | default | meaning |\n| --- | --- | --- | --- |\n");
    for a in args {
        let flag = match a.get_long() {
            Some(l) => format!("`--{l}`"),
            None => format!("`{}` (argument)", a.get_id().as_str().to_uppercase()),
        };
        let env = a
            .get_env()
            .map(|e| format!("`{}`", e.to_string_lossy()))
            .unwrap_or_default();
        let defaults: Vec<String> = a
            .get_default_values()
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect();
        let default = if defaults.is_empty() {
            String::new()
        } else {
            format!("`{}`", defaults.join(","))
        };
        let help = a
            .get_long_help()
            .or(a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {flag} | {env} | {} | {} |",
            cell(&default),
            cell(&help)
        );
    }
    out.push('\n');
}

fn render_command(out: &mut String, path: &str, cmd: &clap::Command) {
    let _ = writeln!(out, "### `{path}`\n");
    if let Some(about) = cmd.get_about() {
        let _ = writeln!(out, "{about}\n");
    }
    table(out, cmd);
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        render_command(out, &format!("{path} {}", sub.get_name()), sub);
    }
}

/// The generated part of docs/configuration.md.
pub fn render() -> String {
    let cli = crate::Cli::command();
    let mut out = String::new();
    out.push_str("### Every command\n\n");
    table(&mut out, &cli);
    for sub in cli.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        render_command(&mut out, &format!("maintcast {}", sub.get_name()), sub);
    }
    out
}

/// One row per metric of `registry`: name, type, help, from its text exposition.
fn metrics_table(out: &mut String, registry: &prometheus_client::registry::Registry) {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    let mut help = std::collections::BTreeMap::new();
    let mut kind = std::collections::BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, h) = rest.split_once(' ').unwrap_or((rest, ""));
            help.insert(name.to_string(), h.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, t) = rest.split_once(' ').unwrap_or((rest, ""));
            kind.insert(name.to_string(), t.to_string());
        }
    }
    out.push_str("| metric | type | meaning |\n| --- | --- | --- |\n");
    for (name, h) in help {
        let t = kind.get(&name).cloned().unwrap_or_default();
        // Counters are exposed with `_total` appended to their name.
        let shown = if t == "counter" {
            format!("{name}_total")
        } else {
            name
        };
        let _ = writeln!(
            out,
            "| `{shown}` | {t} | {} |",
            cell(h.trim_end_matches('.'))
        );
    }
    out.push('\n');
}

/// The generated part of docs/metrics.md.
pub fn render_metrics() -> String {
    let mut out = String::new();
    out.push_str("### `maintcast ingest`\n\n");
    let mut r = prometheus_client::registry::Registry::default();
    maintcast_ingest::Metrics::new().register(&mut r);
    metrics_table(&mut out, &r);
    out.push_str("### `maintcast train --once | --every`\n\n");
    let mut r = prometheus_client::registry::Registry::default();
    maintcast_trainer::service::Metrics::default().register(&mut r);
    metrics_table(&mut out, &r);
    out
}

/// Checks (or, with `MAINTCAST_BLESS`, rewrites) the generated part of a page of docs/.
fn check_generated(page: &str, want: &str) {
    let path = format!("{}/../../docs/{page}", env!("CARGO_MANIFEST_DIR"));
    let doc = std::fs::read_to_string(&path).unwrap();
    let begin = doc.find("<!-- BEGIN GENERATED");
    let (Some(a), Some(b)) = (begin, doc.find(END)) else {
        panic!("{path} lacks the <!-- BEGIN GENERATED ... --> ... {END} markers");
    };
    let a = a + doc[a..].find("-->").expect("closed marker") + "-->".len();
    let want = format!("\n\n{want}");
    if doc[a..b] != want {
        if std::env::var_os("MAINTCAST_BLESS").is_some() {
            std::fs::write(&path, format!("{}{want}{}", &doc[..a], &doc[b..])).unwrap();
            return;
        }
        panic!(
            "docs/{page} is out of date with the code; regenerate it with \
             `MAINTCAST_BLESS=1 cargo test -p maintcast config_doc`"
        );
    }
}

#[test]
fn configuration_md_lists_every_flag() {
    check_generated("configuration.md", &render());
}

#[test]
fn metrics_md_lists_every_metric() {
    check_generated("metrics.md", &render_metrics());
}
