//! Generates the gRPC server (and the bench's client) of Triton's
//! `inference.GRPCInferenceService`; its messages are `mme_oip::grpc`'s,
//! generated there from the same `.proto` files by protox, so that a
//! machine without `protoc` builds both.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = "../oip/proto/triton";
    println!("cargo:rerun-if-changed={dir}");
    let descriptors = protox::compile(["grpc_service.proto"], [dir])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // RPCs the server has no use for (CUDA shared memory, say) answer
        // UNIMPLEMENTED without a hand-written stub each.
        .generate_default_stubs(true)
        .extern_path(".inference", "::mme_oip::grpc::proto")
        .compile_fds(descriptors)?;
    Ok(())
}
