//! Small configuration helpers shared by the services.

use std::fmt;
use std::path::Path;

/// A secret (InfluxDB token, SASL password): never printed, not even by `{:?}`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Reads a secret from the variable `var`, or else from the file named by `<var>_FILE`
/// (trailing whitespace trimmed). Secrets never come from flags (docs/configuration.md).
pub fn secret_from_env(var: &str) -> anyhow::Result<Option<Secret>> {
    if let Ok(v) = std::env::var(var)
        && !v.is_empty()
    {
        return Ok(Some(Secret(v)));
    }
    let file_var = format!("{var}_FILE");
    match std::env::var(&file_var) {
        Ok(path) if !path.is_empty() => secret_from_file(Path::new(&path)).map(Some),
        _ => Ok(None),
    }
}

pub fn secret_from_file(path: &Path) -> anyhow::Result<Secret> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read secret file {}: {e}", path.display()))?;
    let value = text.trim_end().to_string();
    anyhow::ensure!(!value.is_empty(), "secret file {} is empty", path.display());
    Ok(Secret(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_does_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn secret_file_is_trimmed_and_empty_is_refused() {
        let dir = std::env::temp_dir().join(format!("maintcast-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("token");
        std::fs::write(&p, "abc\n").unwrap();
        assert_eq!(secret_from_file(&p).unwrap().expose(), "abc");
        std::fs::write(&p, "\n").unwrap();
        assert!(
            secret_from_file(&p)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        assert!(secret_from_file(&dir.join("missing")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
