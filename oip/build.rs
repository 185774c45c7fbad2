//! With the `grpc` feature: generates the messages of Triton's
//! `inference.GRPCInferenceService` from `proto/triton/`. They are parsed by
//! protox, in Rust, so that a machine without `protoc` builds them.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    #[cfg(feature = "grpc")]
    {
        let dir = "proto/triton";
        println!("cargo:rerun-if-changed={dir}");
        let descriptors = protox::compile(["grpc_service.proto"], [dir])?;
        prost_build::Config::new().compile_fds(descriptors)?;
    }
    Ok(())
}
