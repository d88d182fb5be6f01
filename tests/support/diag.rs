//! What a service was doing, for failure messages: its readiness and `/metrics` counters, so a
//! timeout says "consumed 0 messages" or "4,000 rows behind" rather than only "expected 5,619".

use std::net::SocketAddr;
use std::time::Duration;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("HTTP client")
}

/// `/readyz` and the non-zero `maintcast_*` samples of `/metrics` at `addr`, or why they could
/// not be read.
pub async fn service_state(addr: SocketAddr) -> String {
    let ready = match client().get(format!("http://{addr}/readyz")).send().await {
        Ok(r) => format!("/readyz {}", r.status()),
        Err(e) => format!("/readyz unreachable ({e})"),
    };
    let metrics = match scrape(addr).await {
        Some(body) => summarize_metrics(&body),
        None => "/metrics unreachable".to_string(),
    };
    format!("service at {addr}: {ready}\n{metrics}")
}

/// The non-zero samples of the service's own metrics, histogram buckets left out.
pub fn summarize_metrics(body: &str) -> String {
    body.lines()
        .filter(|l| l.starts_with("maintcast_"))
        .filter(|l| !l.contains("_bucket{"))
        .filter(|l| !l.ends_with(" 0") && !l.ends_with(" 0.0"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The `/metrics` text at `addr`, if it answers.
pub async fn scrape(addr: SocketAddr) -> Option<String> {
    let resp = client()
        .get(format!("http://{addr}/metrics"))
        .send()
        .await
        .ok()?;
    resp.text().await.ok()
}

/// The sum of metric `name`'s samples over all label sets (0 when absent).
pub fn metric_value(body: &str, name: &str) -> f64 {
    body.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.split_once("} ")?.1,
                None => rest.strip_prefix(' ')?,
            };
            value.trim().parse::<f64>().ok()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_value_sums_label_sets_and_ignores_longer_names() {
        let body = "# TYPE x counter\n\
            maintcast_ingest_messages_consumed_total{topic=\"a\"} 3\n\
            maintcast_ingest_messages_consumed_total{topic=\"b\"} 4\n\
            maintcast_ingest_messages_consumed_total_extra 100\n\
            maintcast_ingest_consumer_lag 7\n\
            maintcast_ingest_ready 0\n";
        assert_eq!(
            metric_value(body, "maintcast_ingest_messages_consumed_total"),
            7.0
        );
        assert_eq!(metric_value(body, "maintcast_ingest_consumer_lag"), 7.0);
        assert_eq!(metric_value(body, "maintcast_ingest_absent"), 0.0);
        assert!(!summarize_metrics(body).contains("ready"));
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
    }
}
