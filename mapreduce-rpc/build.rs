//! Compiles the proto with protox (pure Rust), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["mapreduce/v1/mapreduce.proto"], ["proto"])?;
    // A fetched chunk's bytes are a slice of the receive buffer, not a copy of it.
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .bytes(".mapreduce.v1.FetchChunk.data")
        .compile_fds(fds)?;
    Ok(())
}
