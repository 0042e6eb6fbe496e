//! Compiles the KurrentDB protocol definitions in `proto/` with protox (pure Rust, no
//! system `protoc`) and generates the tonic server code.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/streams.proto",
        "proto/gossip.proto",
        "proto/serverfeatures.proto",
        "proto/persistent.proto",
    ];
    let descriptors = protox::compile(files, ["proto"])?;
    tonic_build::configure()
        .build_client(false)
        .build_server(true)
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
