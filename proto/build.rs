//! Compiles the wire schema with protox (pure Rust) so that building needs no `protoc` install.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "maintcast/v1/telemetry.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["."])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
