//! Buckets of a test's own, so that what a query returns is exactly what the test wrote.

use serde_json::Value;

use crate::InfluxEnv;

pub async fn create_bucket(env: &InfluxEnv, name: &str) {
    let http = reqwest::Client::new();
    let base = env.url.trim_end_matches('/');
    let auth = format!("Token {}", env.token);
    let orgs: Value = http
        .get(format!("{base}/api/v2/orgs"))
        .query(&[("org", env.org.as_str())])
        .header("Authorization", &auth)
        .send()
        .await
        .expect("list orgs")
        .json()
        .await
        .expect("orgs JSON");
    let org_id = orgs["orgs"][0]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("org {} not found: {orgs}", env.org));
    let resp = http
        .post(format!("{base}/api/v2/buckets"))
        .header("Authorization", &auth)
        .json(&serde_json::json!({"orgID": org_id, "name": name, "retentionRules": []}))
        .send()
        .await
        .expect("create bucket");
    let status = resp.status();
    assert!(
        status.is_success(),
        "creating bucket {name}: {status} {}",
        resp.text().await.unwrap_or_default()
    );
}

pub async fn delete_bucket(env: &InfluxEnv, name: &str) {
    let http = reqwest::Client::new();
    let base = env.url.trim_end_matches('/');
    let auth = format!("Token {}", env.token);
    let Ok(resp) = http
        .get(format!("{base}/api/v2/buckets"))
        .query(&[("name", name)])
        .header("Authorization", &auth)
        .send()
        .await
    else {
        return;
    };
    let Ok(list) = resp.json::<Value>().await else {
        return;
    };
    if let Some(id) = list["buckets"][0]["id"].as_str() {
        let _ = http
            .delete(format!("{base}/api/v2/buckets/{id}"))
            .header("Authorization", &auth)
            .send()
            .await;
    }
}
