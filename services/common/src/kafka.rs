//! Kafka client configuration with librdkafka property passthrough.

use rdkafka::ClientConfig;

/// Prefix of environment variables passed to librdkafka as client properties:
/// `MAINTCAST_KAFKA_SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`, so TLS and SASL work as
/// librdkafka documents them without a flag for each.
pub const PASSTHROUGH_PREFIX: &str = "MAINTCAST_KAFKA_";

/// Our own variables under the prefix, which are not librdkafka properties.
const RESERVED: &[&str] = &["BROKERS", "GROUP", "GROUP_ID"];

/// A client config for `brokers` plus every `MAINTCAST_KAFKA_<PROP>` from the environment.
pub fn client_config(brokers: &str) -> ClientConfig {
    client_config_from(brokers, std::env::vars())
}

/// As [`client_config`], reading passthrough properties from `vars` (testable without touching
/// the process environment).
pub fn client_config_from(
    brokers: &str,
    vars: impl IntoIterator<Item = (String, String)>,
) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    for (name, value) in passthrough(vars) {
        config.set(name, value);
    }
    config
}

/// `(property, value)` pairs from `MAINTCAST_KAFKA_<PROP>` variables, `_` read as `.`
/// (librdkafka property names use dots and no underscores).
pub fn passthrough(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = vars
        .into_iter()
        .filter_map(|(k, v)| {
            let prop = k.strip_prefix(PASSTHROUGH_PREFIX)?;
            if prop.is_empty() || RESERVED.contains(&prop) {
                return None;
            }
            Some((prop.to_ascii_lowercase().replace('_', "."), v))
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passthrough_maps_names_and_skips_our_own() {
        let vars = [
            ("MAINTCAST_KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
            ("MAINTCAST_KAFKA_SASL_MECHANISMS", "PLAIN"),
            ("MAINTCAST_KAFKA_BROKERS", "x:1"),
            ("MAINTCAST_INFLUX_URL", "http://y"),
            ("KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
        ]
        .map(|(k, v)| (k.to_string(), v.to_string()));
        let props = passthrough(vars.clone());
        assert_eq!(
            props,
            vec![
                ("sasl.mechanisms".to_string(), "PLAIN".to_string()),
                ("security.protocol".to_string(), "SASL_SSL".to_string())
            ]
        );
        let config = client_config_from("b:9092", vars);
        assert_eq!(config.get("bootstrap.servers"), Some("b:9092"));
        assert_eq!(config.get("security.protocol"), Some("SASL_SSL"));
    }
}
