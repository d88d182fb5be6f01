//! docs/configuration.md's tables of flags, rendered from the commands' own definitions, so the
//! page cannot drift from the code: `cargo test -p maintcast config_doc` fails when it does, and
//! `MAINTCAST_BLESS=1 cargo test -p maintcast config_doc` rewrites the generated part.

use std::fmt::Write as _;

use clap::CommandFactory;

const BEGIN: &str = "<!-- BEGIN GENERATED: flags (services/maintcast/src/config_doc.rs) -->";
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

#[test]
fn configuration_md_lists_every_flag() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/configuration.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let (Some(a), Some(b)) = (doc.find(BEGIN), doc.find(END)) else {
        panic!("{path} lacks the {BEGIN} ... {END} markers");
    };
    let current = &doc[a + BEGIN.len()..b];
    let want = format!("\n\n{}", render());
    if current != want {
        if std::env::var_os("MAINTCAST_BLESS").is_some() {
            let new = format!("{}{BEGIN}{want}{}", &doc[..a], &doc[b..]);
            std::fs::write(path, new).unwrap();
            return;
        }
        panic!(
            "docs/configuration.md is out of date with the commands' flags; regenerate it with \
             `MAINTCAST_BLESS=1 cargo test -p maintcast config_doc`"
        );
    }
}
