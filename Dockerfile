# A SageMaker bring-your-own multi-model container: `mme serve` on port 8080
# (or SAGEMAKER_BIND_TO_PORT), models from /opt/ml/models.

# Build stage: the host binary and the built-in ONNX engine (a wasm guest);
# model authors build their own guests.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN rustup target add wasm32-wasip2 \
    && cargo build --release --locked -p mme-host --bin mme \
    && cargo build --profile guest --locked --target wasm32-wasip2 -p mme-onnx --lib

# Runtime stage: the binary with the ONNX engine beside it, the CA bundle, a
# cache folder private to an unprivileged user, with the engine precompiled
# (a machine whose CPU does not match that code compiles it again at start).
FROM debian:bookworm-slim
LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
RUN useradd --system --uid 10001 --home-dir /var/lib/mme --create-home mme \
    && install -d -m 0700 -o mme -g mme /var/cache/mme
COPY --from=build /src/target/release/mme /usr/local/bin/mme
COPY --from=build /src/target/wasm32-wasip2/guest/mme_onnx.wasm /usr/local/bin/mme-onnx.wasm
# The CA bundle, for HTTPS to S3 (--model-store s3://…): the build image has it.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV MME_CACHE_DIR=/var/cache/mme \
    RUST_LOG=info
USER 10001
RUN ["/usr/local/bin/mme", "precompile"]
# HTTP (SageMaker's port) and gRPC (KServe's).
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/mme"]
CMD ["serve"]
