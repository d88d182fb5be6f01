//! The Prometheus `deploy/infra.sh start` runs on loopback. It scrapes nothing of its own: a test
//! drops its scrape configs and rule files into `$MAINTCAST_PROMETHEUS_DROPIN` (the server's
//! config globs `scrape-*.yml` and `rules-*.yml` there), reloads, and removes them when done, so
//! tests running side by side never see each other's targets.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

pub struct Prometheus {
    pub url: String,
    dropin: PathBuf,
    files: Vec<PathBuf>,
    http: reqwest::Client,
}

impl Prometheus {
    /// The shared server, checked to be ready.
    pub async fn shared() -> Prometheus {
        let url = std::env::var("MAINTCAST_PROMETHEUS_URL")
            .unwrap_or_else(|_| "http://127.0.0.1:19090".into());
        let dropin = std::env::var("MAINTCAST_PROMETHEUS_DROPIN").unwrap_or_else(|_| {
            format!(
                "{}/.cache/maintcast/run/prometheus.d",
                std::env::var("HOME").unwrap_or_default()
            )
        });
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let ready = http
            .get(format!("{url}/-/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success());
        assert!(
            ready,
            "Prometheus is not running at {url}: start it with `deploy/infra.sh start` \
             (or run the whole suite with `.ci/run`)"
        );
        Prometheus {
            url,
            dropin: PathBuf::from(dropin),
            files: Vec::new(),
            http,
        }
    }

    /// Adds `scrape-<id>.yml` (a `scrape_configs:` document) or `rules-<id>.yml` (rule groups)
    /// and reloads; the file is removed when `self` is dropped.
    pub async fn add(&mut self, kind: &str, id: &str, yaml: &str) {
        assert!(kind == "scrape" || kind == "rules");
        std::fs::create_dir_all(&self.dropin).unwrap();
        let path = self.dropin.join(format!("{kind}-{id}.yml"));
        std::fs::write(&path, yaml).unwrap();
        self.files.push(path);
        self.reload().await;
    }

    pub async fn reload(&self) {
        let resp = self
            .http
            .post(format!("{}/-/reload", self.url))
            .send()
            .await
            .expect("POST /-/reload");
        let status = resp.status();
        assert!(
            status.is_success(),
            "Prometheus refused the reload ({status}): {}",
            resp.text().await.unwrap_or_default()
        );
    }

    /// An instant query through the HTTP API: its result vector (`data.result`).
    pub async fn query(&self, expr: &str) -> Vec<Value> {
        let resp: Value = self
            .http
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await
            .expect("Prometheus query")
            .json()
            .await
            .expect("Prometheus query JSON");
        assert_eq!(resp["status"], "success", "query {expr}: {resp}");
        resp["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The active scrape targets (`/api/v1/targets`).
    pub async fn targets(&self) -> Vec<Value> {
        let resp: Value = self
            .http
            .get(format!("{}/api/v1/targets?state=active", self.url))
            .send()
            .await
            .expect("Prometheus targets")
            .json()
            .await
            .expect("targets JSON");
        resp["data"]["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
        // Reload so the removed targets stop being scraped. Drop cannot await: a plain HTTP/1.1
        // request on a socket does.
        use std::io::{Read, Write};
        let host = self
            .url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        if let Ok(mut s) = std::net::TcpStream::connect(&host) {
            let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
            let _ = write!(
                s,
                "POST /-/reload HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
}
