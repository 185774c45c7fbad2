//! `serving.properties`: DJL Serving's keys and meanings, plus our own.
//!
//! The file comes from the package author, so it is untrusted: every line
//! that is not understood is either a warning (an unknown key) or an error
//! that names the key and the line (a bad value, a duplicate, garbage).

use std::collections::HashMap;
use std::time::Duration;

use thiserror::Error;

/// Largest properties file accepted; real ones are a few hundred bytes.
pub const MAX_PROPERTIES_BYTES: usize = 64 * 1024;

/// Default of `minWorkers`: one warm instance, as DJL.
pub const DEFAULT_MIN_WORKERS: u32 = 1;
/// Default of `batch_size`: no batching.
pub const DEFAULT_BATCH_SIZE: u32 = 1;
/// Default of `max_batch_delay`, as DJL (milliseconds in the file).
pub const DEFAULT_MAX_BATCH_DELAY: Duration = Duration::from_millis(100);
/// Default of `max_idle_time`, as DJL (seconds in the file).
pub const DEFAULT_MAX_IDLE_TIME: Duration = Duration::from_secs(60);
/// Default of `job_queue_size`, as DJL.
pub const DEFAULT_JOB_QUEUE_SIZE: usize = 1000;
/// Default of `request_timeout_ms`: SageMaker's own limit on an invocation.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Default of `model_loading_timeout`, as DJL (seconds in the file).
pub const DEFAULT_LOAD_TIMEOUT: Duration = Duration::from_secs(240);

/// Upper bounds that keep a hostile file from asking for absurd resources.
const MAX_WORKERS_LIMIT: u32 = 1024;
const MAX_BATCH_SIZE: u32 = 4096;
const MAX_QUEUE_SIZE: usize = 1_000_000;
const MAX_TIMEOUT_MS: u64 = 3_600_000;

/// A problem with `serving.properties`; each names the line or the key.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PropertiesError {
    /// The file is larger than [`MAX_PROPERTIES_BYTES`].
    #[error("serving.properties is {0} bytes; the limit is {MAX_PROPERTIES_BYTES}")]
    TooLarge(usize),
    /// The file is not text.
    #[error("serving.properties is not UTF-8 text")]
    NotText,
    /// A line that is neither a comment nor `key=value`.
    #[error("serving.properties line {line}: expected key=value, got {text:?}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The offending line, shortened.
        text: String,
    },
    /// The same key twice: which one wins would be a guess.
    #[error("serving.properties line {line}: duplicate key {key:?} (first set on line {first})")]
    Duplicate {
        /// The repeated key.
        key: String,
        /// Where it was first set.
        first: usize,
        /// Where it was set again.
        line: usize,
    },
    /// A known key with a value it cannot take.
    #[error("serving.properties: {key}={value:?} is invalid: {reason}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as written, shortened.
        value: String,
        /// What the value must be.
        reason: String,
    },
}

/// What runs a package's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The package's own `model.wasm` (`engine=Wasm`).
    Wasm,
    /// The built-in ONNX engine runs the package's `.onnx` file
    /// (`engine=OnnxRuntime`, DJL's value, or `engine=Onnx`).
    Onnx,
}

/// The parsed and validated settings of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Properties {
    /// `minWorkers`: instances kept warm (0 allows scale to zero).
    pub min_workers: u32,
    /// `maxWorkers`: the cap on instances; `None` means the server's compute threads.
    pub max_workers: Option<u32>,
    /// `batch_size`: requests handed to one `predict` call.
    pub batch_size: u32,
    /// `max_batch_delay` (ms): how long a partial batch waits for more.
    pub max_batch_delay: Duration,
    /// `max_idle_time` (s): an idle worker retires after this long.
    pub max_idle_time: Duration,
    /// `job_queue_size`: requests that may wait; more are refused at once.
    pub job_queue_size: usize,
    /// `required_memory_mb`: what the model says it needs, for admission.
    pub required_memory_mb: Option<u64>,
    /// `max_memory_mb`: the cap on one instance's linear memory.
    pub max_memory_mb: Option<u64>,
    /// `request_timeout_ms`: the deadline of one request, queue time included.
    pub request_timeout: Duration,
    /// `model_loading_timeout` (or DJL's `option.model_loading_timeout`), in
    /// seconds: the deadline of the model's `load`.
    pub load_timeout: Duration,
    /// `engine`, when the file names one; otherwise the package's files decide.
    pub engine: Option<Engine>,
    /// `option.*` entries, prefix removed, in file order; passed to the guest's `load`.
    pub options: Vec<(String, String)>,
    /// Keys this server does not know, kept so that the loader can warn about them.
    pub unknown_keys: Vec<String>,
}

impl Default for Properties {
    fn default() -> Self {
        Properties {
            min_workers: DEFAULT_MIN_WORKERS,
            max_workers: None,
            batch_size: DEFAULT_BATCH_SIZE,
            max_batch_delay: DEFAULT_MAX_BATCH_DELAY,
            max_idle_time: DEFAULT_MAX_IDLE_TIME,
            job_queue_size: DEFAULT_JOB_QUEUE_SIZE,
            required_memory_mb: None,
            max_memory_mb: None,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            load_timeout: DEFAULT_LOAD_TIMEOUT,
            engine: None,
            options: Vec::new(),
            unknown_keys: Vec::new(),
        }
    }
}

impl Properties {
    /// Parses the bytes of a `serving.properties` file.
    pub fn parse(bytes: &[u8]) -> Result<Self, PropertiesError> {
        if bytes.len() > MAX_PROPERTIES_BYTES {
            return Err(PropertiesError::TooLarge(bytes.len()));
        }
        let text = std::str::from_utf8(bytes).map_err(|_| PropertiesError::NotText)?;
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut properties = Properties::default();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with('!') {
                continue;
            }
            let Some((key, value)) = trimmed.split_once('=') else {
                return Err(PropertiesError::Syntax {
                    line,
                    text: shorten(trimmed),
                });
            };
            let (key, value) = (key.trim(), value.trim());
            if key.is_empty()
                || key.chars().any(char::is_control)
                || value.chars().any(char::is_control)
            {
                return Err(PropertiesError::Syntax {
                    line,
                    text: shorten(trimmed),
                });
            }
            if let Some(first) = seen.insert(key, line) {
                return Err(PropertiesError::Duplicate {
                    key: key.to_string(),
                    first,
                    line,
                });
            }
            properties.set(key, value)?;
        }
        properties.validate()?;
        Ok(properties)
    }

    /// These properties with `overrides` (`key`, `value`) set over them,
    /// checked exactly as the file's own lines are: the caller of DJL's
    /// `POST /models?batch_size=…` is as untrusted as a package author.
    pub fn overridden(&self, overrides: &[(&str, String)]) -> Result<Self, PropertiesError> {
        let mut properties = self.clone();
        for (key, value) in overrides {
            properties.set(key, value)?;
        }
        properties.validate()?;
        Ok(properties)
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), PropertiesError> {
        match key {
            "minWorkers" => self.min_workers = number(key, value, 0, MAX_WORKERS_LIMIT)?,
            "maxWorkers" => self.max_workers = Some(number(key, value, 1, MAX_WORKERS_LIMIT)?),
            "batch_size" => self.batch_size = number(key, value, 1, MAX_BATCH_SIZE)?,
            "max_batch_delay" => {
                self.max_batch_delay = Duration::from_millis(number(key, value, 0, MAX_TIMEOUT_MS)?)
            }
            "max_idle_time" => {
                self.max_idle_time = Duration::from_secs(number(key, value, 0, MAX_TIMEOUT_MS)?)
            }
            "job_queue_size" => self.job_queue_size = number(key, value, 1, MAX_QUEUE_SIZE)?,
            "required_memory_mb" => {
                self.required_memory_mb = Some(number(key, value, 0, u64::from(u32::MAX))?)
            }
            "max_memory_mb" => self.max_memory_mb = Some(number(key, value, 1, 65_536)?),
            "request_timeout_ms" => {
                self.request_timeout = Duration::from_millis(number(key, value, 1, MAX_TIMEOUT_MS)?)
            }
            "model_loading_timeout" | "option.model_loading_timeout" => {
                self.load_timeout =
                    Duration::from_secs(number(key, value, 1, MAX_TIMEOUT_MS / 1000)?)
            }
            "engine" => {
                self.engine = Some(match value.to_ascii_lowercase().as_str() {
                    "wasm" => Engine::Wasm,
                    "onnxruntime" | "onnx" => Engine::Onnx,
                    _ => {
                        return Err(bad(
                            key,
                            value,
                            "this server runs engine=Wasm (a model.wasm) and engine=OnnxRuntime (a .onnx file)",
                        ));
                    }
                })
            }
            _ => match key.strip_prefix("option.") {
                Some(option) if !option.is_empty() => {
                    self.options.push((option.to_string(), value.to_string()))
                }
                _ => self.unknown_keys.push(key.to_string()),
            },
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), PropertiesError> {
        if let Some(max) = self.max_workers
            && self.min_workers > max
        {
            return Err(bad(
                "minWorkers",
                &self.min_workers.to_string(),
                &format!("it is above maxWorkers={max}"),
            ));
        }
        Ok(())
    }
}

fn number<T>(key: &str, value: &str, min: T, max: T) -> Result<T, PropertiesError>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let parsed: T = value.parse().map_err(|_| {
        bad(
            key,
            value,
            &format!("expected a whole number from {min} to {max}"),
        )
    })?;
    if parsed < min || parsed > max {
        return Err(bad(key, value, &format!("must be from {min} to {max}")));
    }
    Ok(parsed)
}

fn bad(key: &str, value: &str, reason: &str) -> PropertiesError {
    PropertiesError::BadValue {
        key: key.to_string(),
        value: shorten(value),
        reason: reason.to_string(),
    }
}

/// Error messages quote untrusted text; keep them short.
fn shorten(text: &str) -> String {
    text.chars().take(80).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_defaults() {
        assert_eq!(Properties::parse(b"").unwrap(), Properties::default());
    }

    #[test]
    fn known_keys_options_comments_and_unknown_keys() {
        let text = "# comment\n! also\nminWorkers = 0\nmaxWorkers=4\nbatch_size=8\n\
                    max_batch_delay=5\nmax_idle_time=2\njob_queue_size=10\nrequest_timeout_ms=250\n\
                    max_memory_mb=64\nrequired_memory_mb=12\nengine=Wasm\noption.model_file=w.bin\n\
                    model_loading_timeout=30\n\
                    option.x = a=b\ntensor_parallel_degree=2\n";
        let p = Properties::parse(text.as_bytes()).unwrap();
        assert_eq!(p.min_workers, 0);
        assert_eq!(p.max_workers, Some(4));
        assert_eq!(p.batch_size, 8);
        assert_eq!(p.max_batch_delay, Duration::from_millis(5));
        assert_eq!(p.max_idle_time, Duration::from_secs(2));
        assert_eq!(p.job_queue_size, 10);
        assert_eq!(p.request_timeout, Duration::from_millis(250));
        assert_eq!(p.load_timeout, Duration::from_secs(30));
        assert_eq!(p.max_memory_mb, Some(64));
        assert_eq!(p.required_memory_mb, Some(12));
        assert_eq!(p.engine, Some(Engine::Wasm));
        assert_eq!(
            p.options,
            vec![
                ("model_file".into(), "w.bin".into()),
                ("x".into(), "a=b".into())
            ]
        );
        assert_eq!(p.unknown_keys, vec!["tensor_parallel_degree".to_string()]);
    }

    #[test]
    fn the_engine_takes_djl_values() {
        for (text, engine) in [
            ("engine=OnnxRuntime", Some(Engine::Onnx)),
            ("engine=Onnx", Some(Engine::Onnx)),
            ("engine=wasm", Some(Engine::Wasm)),
            ("", None),
        ] {
            assert_eq!(
                Properties::parse(text.as_bytes()).unwrap().engine,
                engine,
                "{text}"
            );
        }
    }

    #[test]
    fn the_load_timeout_takes_djl_spelling_too_and_is_not_passed_to_the_model() {
        let p = Properties::parse(b"option.model_loading_timeout=5\n").unwrap();
        assert_eq!(p.load_timeout, Duration::from_secs(5));
        assert!(p.options.is_empty());
        assert_eq!(Properties::default().load_timeout, DEFAULT_LOAD_TIMEOUT);
        assert!(Properties::parse(b"model_loading_timeout=0\n").is_err());
    }

    #[test]
    fn bad_values_name_the_key() {
        for (text, key) in [
            ("batch_size=0", "batch_size"),
            ("batch_size=-1", "batch_size"),
            ("maxWorkers=lots", "maxWorkers"),
            ("job_queue_size=99999999999999999999", "job_queue_size"),
            ("engine=Python", "engine"),
            ("minWorkers=5\nmaxWorkers=2", "minWorkers"),
        ] {
            match Properties::parse(text.as_bytes()) {
                Err(PropertiesError::BadValue { key: k, .. }) => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: expected a bad value, got {other:?}"),
            }
        }
    }

    #[test]
    fn duplicate_keys_are_rejected_with_both_lines() {
        let err = Properties::parse(b"batch_size=2\n\nbatch_size=3").unwrap_err();
        assert_eq!(
            err,
            PropertiesError::Duplicate {
                key: "batch_size".into(),
                first: 1,
                line: 3
            }
        );
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(
            Properties::parse(&[0xff, 0x00, 0x80]),
            Err(PropertiesError::NotText)
        );
        assert!(matches!(
            Properties::parse(b"just words"),
            Err(PropertiesError::Syntax { line: 1, .. })
        ));
        assert!(matches!(
            Properties::parse(b"=value"),
            Err(PropertiesError::Syntax { .. })
        ));
        assert!(matches!(
            Properties::parse(b"key=a\x00b"),
            Err(PropertiesError::Syntax { .. })
        ));
        let huge = vec![b'#'; MAX_PROPERTIES_BYTES + 1];
        assert_eq!(
            Properties::parse(&huge),
            Err(PropertiesError::TooLarge(MAX_PROPERTIES_BYTES + 1))
        );
    }

    #[test]
    fn overrides_are_checked_as_the_file_is() {
        let base = Properties::parse(b"batch_size=2\nmaxWorkers=4\n").unwrap();
        let over = base
            .overridden(&[("batch_size", "8".into()), ("minWorkers", "3".into())])
            .unwrap();
        assert_eq!(
            (over.batch_size, over.min_workers, over.max_workers),
            (8, 3, Some(4))
        );
        for bad in [
            vec![("max_batch_delay", u64::MAX.to_string())],
            vec![("batch_size", "0".to_string())],
            vec![("minWorkers", "5".to_string())],
        ] {
            assert!(base.overridden(&bad).is_err(), "{bad:?}");
        }
    }
}
