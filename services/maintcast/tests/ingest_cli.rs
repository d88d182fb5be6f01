//! `maintcast ingest` refuses a bad configuration before it connects to anything, naming every
//! offending flag (a zero commit interval used to panic inside tokio).

use std::process::Command;

#[test]
fn zero_and_negative_settings_are_refused_naming_their_flags() {
    let out = Command::new(env!("CARGO_BIN_EXE_maintcast"))
        .args([
            "ingest",
            "--commit-interval",
            "0s",
            "--batch-size",
            "0",
            "--alert-hysteresis-days",
            "-1",
            "--brokers",
            "127.0.0.1:1",
        ])
        // The token is a secret: it comes from the environment, never a flag.
        .env("MAINTCAST_INFLUX_TOKEN", "unused")
        .env_remove("MAINTCAST_INFLUX_TOKEN_FILE")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    for flag in [
        "--commit-interval",
        "--batch-size",
        "--alert-hysteresis-days",
    ] {
        assert!(stderr.contains(flag), "{flag} not named in: {stderr}");
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
}
