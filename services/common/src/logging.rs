use tracing_subscriber::EnvFilter;

/// Installs the global `tracing` subscriber. `RUST_LOG` (or `MAINTCAST_LOG`) picks the level;
/// JSON output is for log shippers, text for people.
pub fn init(json: bool) {
    let filter = std::env::var("MAINTCAST_LOG")
        .ok()
        .map(EnvFilter::new)
        .unwrap_or_else(|| {
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))
        });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: the first subscriber stays.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
