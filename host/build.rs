//! Generates the gRPC server of Triton's `inference.GRPCInferenceService`
//! from the `.proto` files in `proto/triton/`. They are parsed by protox, in
//! Rust, so that a machine without `protoc` builds the server.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "proto/triton";
    println!("cargo:rerun-if-changed={dir}");
    let descriptors = protox::compile(["grpc_service.proto"], [dir])?;
    tonic_prost_build::configure()
        // The bench's load generator is a client of the same service.
        .build_client(true)
        .build_server(true)
        // RPCs the server has no use for (CUDA shared memory, say) answer
        // UNIMPLEMENTED without a hand-written stub each.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
