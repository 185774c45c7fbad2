//! Packages in S3, or in any S3-compatible server: one `GetObject` per
//! package, streamed to a temporary file and checked before it is used.
//!
//! Every call has a timeout, and transient failures are retried with
//! backoff, so that a store that is down answers 503 in about a second
//! instead of hanging the request.

use std::io::Write;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::meta::region::RegionProviderChain;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::types::ChecksumMode;
use md5::{Digest, Md5};
use tokio::sync::OnceCell;

use super::StoreError;

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one attempt may take until the object's headers arrive.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the headers may take over all attempts.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the body may go without a byte before the download is abandoned.
const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts of one request (the SDK's retries) and of one whole download.
const ATTEMPTS: u32 = 3;
/// The region used when none is configured: S3-compatible servers ignore it.
const FALLBACK_REGION: &str = "us-east-1";

/// An object in a bucket: `s3://bucket/key`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Location {
    /// The bucket.
    pub bucket: String,
    /// The key (for a store: the prefix, without its trailing `/`).
    pub key: String,
}

impl S3Location {
    /// Parses `s3://bucket/key`; the key may be empty (a whole bucket).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let invalid = |reason: &str| StoreError::InvalidUrl {
            url: url.chars().take(256).collect(),
            reason: reason.to_string(),
        };
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| invalid("it does not start with s3://"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
        if !bucket_ok {
            return Err(invalid(
                "the bucket name must be 3 to 63 lowercase letters, digits, '-' or '.'",
            ));
        }
        if key.len() > 1024 || key.contains('\0') {
            return Err(invalid("the key is longer than 1024 bytes or holds a NUL"));
        }
        Ok(S3Location {
            bucket: bucket.to_string(),
            key: key.trim_end_matches('/').to_string(),
        })
    }

    /// The object `<prefix>/<name>.tar.gz` of a store at this location.
    pub fn package(&self, name: &str) -> S3Location {
        let key = if self.key.is_empty() {
            format!("{name}.tar.gz")
        } else {
            format!("{}/{name}.tar.gz", self.key)
        };
        S3Location {
            bucket: self.bucket.clone(),
            key,
        }
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// How to reach S3; the rest comes from the standard AWS chain
/// (environment, profile, container and instance credentials).
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    /// An S3-compatible server's address (else `AWS_ENDPOINT_URL`, else AWS).
    pub endpoint: Option<String>,
    /// Path-style addressing (`host/bucket/key`), which most S3-compatible
    /// servers on loopback need.
    pub path_style: bool,
}

/// A client built on first use: a server whose store is a folder never
/// looks for AWS credentials unless a load names an `s3://` url.
pub struct S3Access {
    options: S3Options,
    client: OnceCell<Client>,
}

/// What a download wrote and what S3 said about it.
#[derive(Debug, Clone)]
pub struct Downloaded {
    /// Bytes written.
    pub size: u64,
    /// The object's ETag, for the record.
    pub etag: Option<String>,
}

impl S3Access {
    /// Access with these options; nothing is contacted yet.
    pub fn new(options: S3Options) -> Self {
        S3Access {
            options,
            client: OnceCell::new(),
        }
    }

    /// The SDK's futures (this one's `load`, and each request's `send`)
    /// are kilobytes each, so they are boxed where they are awaited:
    /// inline, every future that might reach the store (each inference
    /// request, which might load its model) would be as large.
    async fn client(&self) -> &Client {
        self.client
            .get_or_init(|| async {
                let region = RegionProviderChain::default_provider().or_else(FALLBACK_REGION);
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .region(region)
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(CONNECT_TIMEOUT)
                            .operation_attempt_timeout(ATTEMPT_TIMEOUT)
                            .operation_timeout(OPERATION_TIMEOUT)
                            .build(),
                    )
                    .retry_config(
                        RetryConfig::standard()
                            .with_max_attempts(ATTEMPTS)
                            .with_initial_backoff(Duration::from_millis(100))
                            .with_max_backoff(Duration::from_secs(1)),
                    );
                if let Some(endpoint) = &self.options.endpoint {
                    loader = loader.endpoint_url(endpoint);
                }
                let shared = Box::pin(loader.load()).await;
                let config = aws_sdk_s3::config::Builder::from(&shared)
                    .force_path_style(self.options.path_style)
                    .build();
                Client::from_conf(config)
            })
            .await
    }

    /// The names of the `.tar.gz` objects directly under `prefix`, at most
    /// `limit` of them, a page of the listing at a time.
    pub async fn list_packages(
        &self,
        prefix: &S3Location,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let start = if prefix.key.is_empty() {
            String::new()
        } else {
            format!("{}/", prefix.key)
        };
        let mut names = Vec::new();
        let mut token = None;
        loop {
            let list = self
                .client()
                .await
                .list_objects_v2()
                .bucket(&prefix.bucket)
                .prefix(&start)
                .delimiter("/")
                .set_continuation_token(token)
                .send();
            let page = Box::pin(list).await.map_err(|e| StoreError::Unavailable {
                url: prefix.to_string(),
                reason: source_chain(&e),
            })?;
            for object in page.contents() {
                let name = object
                    .key()
                    .and_then(|key| key.strip_prefix(start.as_str()))
                    .and_then(|rest| rest.strip_suffix(".tar.gz"));
                if let Some(name) = name.filter(|n| super::check_name(n).is_ok()) {
                    names.push(name.to_string());
                }
            }
            token = page.next_continuation_token().map(str::to_string);
            if token.is_none() || names.len() >= limit {
                names.truncate(limit);
                return Ok(names);
            }
        }
    }

    /// Downloads `object` into `file`, at most `max_bytes`, checking its
    /// length and (for a single-part upload) its MD5 against the ETag.
    /// A body that breaks off is fetched again, up to [`ATTEMPTS`] times.
    pub async fn download(
        &self,
        object: &S3Location,
        file: &mut std::fs::File,
        max_bytes: u64,
    ) -> Result<Downloaded, StoreError> {
        let mut attempt = 1;
        loop {
            match self.download_once(object, file, max_bytes).await {
                Ok(downloaded) => return Ok(downloaded),
                // The SDK has already retried the request itself.
                Err(Attempt::Final(error)) => return Err(error),
                Err(Attempt::BrokeOff(error)) if attempt >= ATTEMPTS => return Err(error),
                Err(Attempt::BrokeOff(error)) => {
                    tracing::warn!(%object, attempt, %error, "download broke off; retrying");
                    tokio::time::sleep(Duration::from_millis(200) * attempt).await;
                    attempt += 1;
                    file.set_len(0).map_err(|e| cache_error(&e))?;
                    std::io::Seek::rewind(file).map_err(|e| cache_error(&e))?;
                }
            }
        }
    }

    async fn download_once(
        &self,
        object: &S3Location,
        file: &mut std::fs::File,
        max_bytes: u64,
    ) -> Result<Downloaded, Attempt> {
        let get = self
            .client()
            .await
            .get_object()
            .bucket(&object.bucket)
            .key(&object.key)
            .checksum_mode(ChecksumMode::Enabled)
            .send();
        let response = Box::pin(get)
            .await
            .map_err(|error| Attempt::Final(classify(object, error)))?;
        let expected = response
            .content_length()
            .and_then(|len| u64::try_from(len).ok());
        if let Some(len) = expected.filter(|&len| len > max_bytes) {
            return Err(Attempt::Final(StoreError::Corrupt {
                url: object.to_string(),
                reason: format!("the object is {len} bytes; the limit of a package is {max_bytes}"),
            }));
        }
        let etag = response
            .e_tag()
            .map(|tag| tag.trim_matches('"').to_string());
        let mut body = response.body;
        let mut md5 = Md5::new();
        let mut size = 0u64;
        loop {
            let chunk = tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next())
                .await
                .map_err(|_| {
                    Attempt::BrokeOff(StoreError::Unavailable {
                        url: object.to_string(),
                        reason: format!(
                            "no data for {BODY_IDLE_TIMEOUT:?} in the middle of the object"
                        ),
                    })
                })?;
            let Some(chunk) = chunk else { break };
            let chunk = chunk.map_err(|error| {
                Attempt::BrokeOff(StoreError::Unavailable {
                    url: object.to_string(),
                    reason: format!("the download broke off: {}", source_chain(&error)),
                })
            })?;
            size += chunk.len() as u64;
            if size > max_bytes {
                return Err(Attempt::Final(StoreError::Corrupt {
                    url: object.to_string(),
                    reason: format!("the object is over the limit of a package, {max_bytes} bytes"),
                }));
            }
            md5.update(&chunk);
            file.write_all(&chunk)
                .map_err(|e| Attempt::Final(cache_error(&e)))?;
        }
        if let Some(expected) = expected.filter(|&len| len != size) {
            return Err(Attempt::BrokeOff(StoreError::Unavailable {
                url: object.to_string(),
                reason: format!("got {size} of {expected} bytes"),
            }));
        }
        if let Some(tag) = etag.as_deref().filter(|tag| is_plain_md5(tag)) {
            let digest: String = md5.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if !digest.eq_ignore_ascii_case(tag) {
                return Err(Attempt::Final(StoreError::Corrupt {
                    url: object.to_string(),
                    reason: format!("its MD5 is {digest}, but its ETag says {tag}"),
                }));
            }
        }
        Ok(Downloaded { size, etag })
    }
}

/// How one download attempt failed: only a body that broke off is worth
/// another request; the SDK retries the request itself.
enum Attempt {
    /// The request failed after the SDK's retries, or the bytes are wrong.
    Final(StoreError),
    /// The response started, then stopped short.
    BrokeOff(StoreError),
}

/// A single-part upload's ETag is the MD5 of the bytes; a multipart
/// upload's has a `-N` suffix and is not.
fn is_plain_md5(tag: &str) -> bool {
    tag.len() == 32 && tag.bytes().all(|b| b.is_ascii_hexdigit())
}

fn cache_error(error: &std::io::Error) -> StoreError {
    StoreError::Cache {
        reason: format!("cannot write the downloaded package: {error}"),
    }
}

/// An error with its causes, which the SDK keeps apart.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Missing, refused, or unreachable: 404, 502 and 503 to the caller.
fn classify(object: &S3Location, error: SdkError<GetObjectError, HttpResponse>) -> StoreError {
    let url = object.to_string();
    let status = error.raw_response().map(|raw| raw.status().as_u16());
    let service = error.as_service_error();
    if service.is_some_and(GetObjectError::is_no_such_key)
        || service.and_then(ProvideErrorMetadata::code) == Some("NoSuchBucket")
        || status == Some(404)
    {
        return StoreError::ObjectNotFound { url };
    }
    match (service, status) {
        (_, Some(401 | 403)) => StoreError::Refused {
            url,
            reason: "access denied: check the server's AWS credentials and the bucket policy"
                .to_string(),
        },
        (Some(service), Some(status)) if status < 500 => StoreError::Refused {
            url,
            reason: service
                .message()
                .unwrap_or("the store refused the request")
                .to_string(),
        },
        _ => {
            let reason = source_chain(&error);
            if reason.contains("credential") {
                return StoreError::Refused {
                    url,
                    reason: format!(
                        "no AWS credentials: give the server some through the standard AWS chain (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a profile, or a container or instance role): {reason}"
                    ),
                };
            }
            StoreError::Unavailable { url, reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_parsed_and_hostile_ones_refused() {
        let store = S3Location::parse("s3://models-bucket/team/prod/").unwrap();
        assert_eq!(store.bucket, "models-bucket");
        assert_eq!(store.key, "team/prod");
        assert_eq!(
            store.package("m1").to_string(),
            "s3://models-bucket/team/prod/m1.tar.gz"
        );
        let bare = S3Location::parse("s3://bkt").unwrap();
        assert_eq!(bare.package("m").key, "m.tar.gz");
        for bad in [
            "http://bkt/k",
            "s3://",
            "s3://UPPER/k",
            "s3://a/k",
            "s3://bkt\0/k",
            "s3://bkt/k\0",
        ] {
            assert!(S3Location::parse(bad).is_err(), "{bad:?}");
        }
        let long = format!("s3://bkt/{}", "k".repeat(2000));
        assert!(S3Location::parse(&long).is_err());
    }

    #[test]
    fn only_single_part_etags_are_checksums() {
        assert!(is_plain_md5("9e107d9d372bb6826bd81d3542a419d6"));
        assert!(!is_plain_md5("9e107d9d372bb6826bd81d3542a419d6-3"));
        assert!(!is_plain_md5("W/xyz"));
    }
}
