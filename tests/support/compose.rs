//! docker-compose.yml read the way Compose reads it: `.env` interpolation (here `.env.example`,
//! the values a user starts from), YAML merge keys, `environment:` in either form. Shared by the
//! static checks (tests/deploy_compose.rs) and the stack run as processes (tests/deploy_stack.rs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_norway::Value;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

pub fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `.env.example` as a map: the values a user starts from.
pub fn env_example() -> BTreeMap<String, String> {
    read(".env.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!(".env.example: bad line {l:?}"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Compose's interpolation (`$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR:?error}`, `$$`), with the
/// values of `env`. A variable with neither a value there nor a default is an error.
pub fn interpolate(text: &str, env: &BTreeMap<String, String>, errors: &mut Vec<String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        rest = &rest[i + 1..];
        if let Some(r) = rest.strip_prefix('$') {
            out.push('$');
            rest = r;
        } else if let Some(r) = rest.strip_prefix('{') {
            let end = r.find('}').expect("unterminated ${ in compose file");
            let expr = &r[..end];
            rest = &r[end + 1..];
            let (name, default) = if let Some((n, _)) = expr.split_once(":?") {
                (n, None)
            } else {
                match expr.split_once(":-").or_else(|| expr.split_once('-')) {
                    Some((n, d)) => (n, Some(d)),
                    None => (expr, None),
                }
            };
            match (env.get(name), default) {
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => errors.push(format!(
                    "${{{expr}}} has no default and is not in .env.example"
                )),
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            let name = &rest[..end];
            rest = &rest[end..];
            match env.get(name) {
                Some(v) => out.push_str(v),
                None => errors.push(format!("${name} is not in .env.example")),
            }
        }
    }
    out.push_str(rest);
    out
}

/// A compose file interpolated with `.env.example`, merge keys applied.
pub fn load_compose(rel: &str, errors: &mut Vec<String>) -> Value {
    load_compose_with(rel, &BTreeMap::new(), errors)
}

/// As [`load_compose`], with `overrides` taking the place of `.env.example` values (what a user
/// edits in `.env`).
pub fn load_compose_with(
    rel: &str,
    overrides: &BTreeMap<String, String>,
    errors: &mut Vec<String>,
) -> Value {
    let mut env = env_example();
    env.extend(overrides.clone());
    let text = interpolate(&read(rel), &env, errors);
    let mut v: Value =
        serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{rel} is not valid YAML: {e}"));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{rel}: YAML merge keys: {e}"));
    v
}

/// A list of strings, or a string split on whitespace (`command: ingest --x`).
pub fn strings(v: &Value) -> Vec<String> {
    match v {
        Value::Sequence(s) => s
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    }
}

/// `environment:` as a map, whether written as a mapping or as a list of `K=V`.
pub fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Mapping(m) => m
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Value::String(s) => s.clone(),
                    Value::Null => String::new(),
                    other => serde_norway::to_string(other).unwrap().trim().to_string(),
                };
                (k.as_str().unwrap().to_string(), v)
            })
            .collect(),
        Value::Sequence(s) => s
            .iter()
            .filter_map(Value::as_str)
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

pub fn services(compose: &Value) -> BTreeMap<String, Value> {
    compose["services"]
        .as_mapping()
        .expect("services")
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_string(), v.clone()))
        .collect()
}

/// A service runs the maintcast image when it is built from deploy/docker/.
pub fn is_maintcast(service: &Value) -> bool {
    service["build"]["dockerfile"]
        .as_str()
        .is_some_and(|d| d.starts_with("deploy/docker/"))
}

/// Dockerfile/shell lines with `\` continuations joined.
pub fn logical_lines(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') && cur.is_empty() {
            continue;
        }
        if let Some(head) = t.strip_suffix('\\') {
            cur.push_str(head);
            cur.push(' ');
        } else {
            cur.push_str(t);
            out.push(std::mem::take(&mut cur));
        }
    }
    out
}

/// A Dockerfile's `ENV K=V ...` settings, in order.
pub fn dockerfile_env(text: &str) -> Vec<(String, String)> {
    logical_lines(text)
        .iter()
        .filter_map(|l| l.strip_prefix("ENV "))
        .flat_map(|rest| {
            rest.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// A Dockerfile's `COPY src dest` from the build context (not `--from=` stages), as
/// (repository path, image path).
pub fn dockerfile_copies(text: &str) -> Vec<(String, String)> {
    logical_lines(text)
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from="))
        .filter_map(|l| {
            let words: Vec<&str> = l
                .split_whitespace()
                .skip(1)
                .filter(|w| !w.starts_with("--"))
                .collect();
            match words.as_slice() {
                [src, dest] => Some((src.to_string(), dest.to_string())),
                _ => None,
            }
        })
        .collect()
}

/// The image's entrypoint script (`ENTRYPOINT ["/usr/local/bin/x"]` copied from the repository).
pub fn dockerfile_entrypoint(text: &str) -> Option<String> {
    let lines = logical_lines(text);
    let ep = lines
        .iter()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))?
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .split(',')
        .next()?
        .trim()
        .trim_matches('"')
        .to_string();
    dockerfile_copies(text)
        .into_iter()
        .find(|(_, dest)| *dest == ep)
        .map(|(src, _)| src)
}
