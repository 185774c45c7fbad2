# A SageMaker bring-your-own multi-model container: `mme serve` on port 8080
# (or SAGEMAKER_BIND_TO_PORT), models from /opt/ml/models.

# Build stage: the host binary only; guests are built by their authors.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p mme-host --bin mme

# Runtime stage: the binary, the CA bundle, a cache folder private to an unprivileged user.
FROM debian:bookworm-slim
LABEL com.amazonaws.sagemaker.capabilities.multi-models=true \
      com.amazonaws.sagemaker.capabilities.accept-bind-to-port=true
RUN useradd --system --uid 10001 --home-dir /var/lib/mme --create-home mme \
    && install -d -m 0700 -o mme -g mme /var/cache/mme
COPY --from=build /src/target/release/mme /usr/local/bin/mme
# The CA bundle, for HTTPS to S3 (--model-store s3://…): the build image has it.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV MME_CACHE_DIR=/var/cache/mme \
    RUST_LOG=info
USER 10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/mme"]
CMD ["serve"]
