//! Why a model could not be loaded, and why a request got no prediction.

use std::time::Duration;

use thiserror::Error;

use crate::runtime::{CallError, GuestError, RuntimeError};
use crate::store::StoreError;
use crate::wlm::{HostFailed, ShuttingDown, TaskError};

/// Why a model could not be loaded.
#[derive(Debug, Clone, Error)]
pub enum LoadError {
    /// The name leads nowhere.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The package is not a valid model: an unsafe or corrupt archive, bad
    /// `serving.properties`, or a `model.wasm` that is not a component of
    /// the model world. The package's author must fix it.
    #[error("model {model:?} cannot be loaded from {package}: {reason}")]
    InvalidPackage {
        /// The model's name.
        model: String,
        /// The package path.
        package: String,
        /// Why.
        reason: String,
    },
    /// The package is valid, but the model's own `load` failed: it returned
    /// an error, trapped, or ran past `model_loading_timeout`.
    #[error("model {model:?} cannot be loaded from {package}: {reason}")]
    Broken {
        /// The model's name.
        model: String,
        /// The package path.
        package: String,
        /// Why.
        reason: String,
    },
    /// A model of that name is already loaded or loading.
    #[error("model {0:?} is already loaded; unload it first to load it again")]
    AlreadyLoaded(String),
    /// No model of that name is loaded.
    #[error("model {0:?} is not loaded")]
    NotLoaded(String),
    /// The instance pool is full: the model is fine, the server is busy.
    #[error("model {model:?} cannot be loaded now: {reason}")]
    NoCapacity {
        /// The model's name.
        model: String,
        /// What is full.
        reason: String,
    },
    /// The model needs more memory than the whole budget.
    #[error(
        "model {model:?} needs {needed} ({detail}), more than the whole memory limit of {limit}; raise --memory-limit"
    )]
    TooLarge {
        /// The model's name.
        model: String,
        /// What it needs.
        needed: String,
        /// Where that comes from.
        detail: String,
        /// The limit.
        limit: String,
    },
    /// The model does not fit next to the loaded ones.
    #[error(
        "model {model:?} needs {needed}, but {used} of the {limit} memory limit is in use; {advice}"
    )]
    NoMemory {
        /// The model's name.
        model: String,
        /// What it needs.
        needed: String,
        /// What is in use.
        used: String,
        /// The limit.
        limit: String,
        /// What to do about it.
        advice: &'static str,
        /// Whether the same load may fit soon by itself (the loaded models
        /// are busy, not too many).
        retry: bool,
    },
    /// The server is stopping.
    #[error(transparent)]
    ShuttingDown(#[from] ShuttingDown),
    /// Host code panicked on it.
    #[error(transparent)]
    HostFailed(#[from] HostFailed),
}

/// Why a request got no prediction.
#[derive(Debug, Clone, Error)]
pub enum PredictError {
    /// The model could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The model refused the input or failed on it.
    #[error(transparent)]
    Guest(#[from] GuestError),
    /// The model crashed or ran out of time.
    #[error(transparent)]
    Call(#[from] CallError),
    /// No instance could be made.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The model's queue is full.
    #[error("model {model:?} has {limit} requests waiting, the limit of its job_queue_size")]
    QueueFull {
        /// The model's name.
        model: String,
        /// Its `job_queue_size`.
        limit: usize,
    },
    /// The request waited in the queue past its deadline and never ran.
    #[error(
        "model {model:?} is overloaded: the request waited {waited:?} in its queue, past its deadline"
    )]
    Expired {
        /// The model's name.
        model: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The server is stopping.
    #[error(transparent)]
    ShuttingDown(#[from] ShuttingDown),
    /// Host code panicked on it.
    #[error(transparent)]
    HostFailed(#[from] HostFailed),
}

impl From<TaskError> for LoadError {
    fn from(error: TaskError) -> Self {
        match error {
            TaskError::ShuttingDown(e) => e.into(),
            TaskError::HostFailed(e) => e.into(),
        }
    }
}
