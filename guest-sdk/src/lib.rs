//! Write a Wasm MME model in Rust.
//!
//! A model is a type that implements [`Model`]: `load` runs once per instance
//! and reads the model's artifacts from `/model` with plain `std::fs`;
//! `predict` answers one request (or override `predict_batch` to answer a
//! whole batch at once). One macro, [`export_model!`], turns the type into a
//! WebAssembly component of the `mme:model/model` world. Build it with
//! `cargo build --target wasm32-wasip2` and package it with `mme package`.
//!
//! The helpers decode the usual request bodies ([`Request::matrix`] reads a
//! JSON matrix such as `[[0.5],[1.0]]`, CSV rows, or the input tensor of an
//! Open Inference Protocol request) and encode responses ([`Response::json`],
//! wrapped in an output tensor when the request was an Open Inference one).
//!
//! # Example
//!
//! ```
//! use mme_guest::{Config, Error, Model, Request, Response};
//!
//! /// Predicts `y = slope * x + intercept`, with both numbers read from `/model`.
//! struct Line {
//!     slope: f64,
//!     intercept: f64,
//! }
//!
//! impl Model for Line {
//!     fn load(_config: &Config) -> Result<Self, Error> {
//!         // A real model reads its artifacts here, e.g. std::fs::read("/model/line.json").
//!         Ok(Line { slope: 2.0, intercept: 1.0 })
//!     }
//!
//!     fn predict(&self, request: Request) -> Result<Response, Error> {
//!         let rows = request.matrix()?;
//!         let y: Vec<f64> = rows.rows().map(|x| self.slope * x[0] + self.intercept).collect();
//!         Response::json(&y)
//!     }
//! }
//!
//! mme_guest::export_model!(Line);
//! # let line = Line::load(&Config::default()).unwrap();
//! # let out = line.predict(Request::json_body("[[0.5]]")).unwrap();
//! # assert_eq!(out.body, b"[2.0]");
//! ```

mod body;
mod config;
mod oip;

pub use body::{CSV, JSON, Matrix};
pub use config::Config;
pub use oip::{METADATA, OIP_JSON, OUTPUT_NAME};

/// The bindings of the `mme:model` world, generated from `wit/`.
///
/// Authors do not use them directly; [`export_model!`] wires a [`Model`] to them.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "model",
        pub_export_macro: true,
        export_macro_name: "__export_model_world",
        default_bindings_module: "mme_guest::bindings",
        additional_derives: [PartialEq],
    });
}

/// Why a model could not answer: bad input (HTTP 400) or its own failure (HTTP 500).
pub use bindings::mme::model::types::Error;
/// One inference request: content type, accepted type, body bytes and the
/// caller's custom attributes.
pub use bindings::mme::model::types::Request;
/// One inference response: content type, body bytes, and custom attributes
/// for the caller.
pub use bindings::mme::model::types::Response;

/// What a model author implements.
pub trait Model: Sized + 'static {
    /// Builds the model once per instance. Artifacts are under `/model`
    /// (read-only); `config` holds the `option.*` entries of `serving.properties`.
    fn load(config: &Config) -> Result<Self, Error>;

    /// Answers one request.
    fn predict(&self, request: Request) -> Result<Response, Error>;

    /// Answers a batch, one result per request, in order. The default calls
    /// [`Model::predict`] for each; override it when the model is faster on
    /// a whole batch.
    fn predict_batch(&self, batch: Vec<Request>) -> Vec<Result<Response, Error>> {
        batch
            .into_iter()
            .map(|request| self.predict(request))
            .collect()
    }

    /// Whether the host may hand this model Open Inference requests with
    /// Triton's binary tensors as the client sent them (a JSON header, then
    /// the tensors' bytes), rather than turned into JSON numbers first: no
    /// number is printed and parsed again on its way in, nor on its way out
    /// when the client wants binary outputs. [`Request::matrix`] reads both
    /// forms and the SDK frames the answer, so a model that reads its input
    /// only through `matrix` sets it to `true`; one that reads a v2
    /// request's `body` itself leaves it `false`. The host learns it from a
    /// custom section that [`export_model!`] writes.
    const READS_BINARY_TENSORS: bool = false;

    /// What the model takes and gives, as the Open Inference Protocol's model
    /// metadata lists it: `{"inputs": [...], "outputs": [...]}`, each entry
    /// `{"name", "datatype", "shape"}`, and optionally a `"platform"`. The
    /// host asks for it with a [`METADATA`] request; the default says nothing.
    fn metadata(&self) -> serde_json::Value {
        serde_json::json!({ "inputs": [], "outputs": [] })
    }
}

impl Error {
    /// The caller's input is unusable; the host answers HTTP 400 with `message`.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// The model failed; the host answers HTTP 500 with `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Error::Internal(message.into())
    }
}

/// Exports a [`Model`] type as the component's implementation of `mme:model/model`.
///
/// Call it once, at the top level of the model's crate.
#[macro_export]
macro_rules! export_model {
    ($model:ty) => {
        const _: () = {
            ::std::thread_local! {
                static MODEL: ::core::cell::RefCell<::core::option::Option<$model>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }

            struct MmeExport;

            // Tells the host whether the model reads binary tensors: a
            // custom section of the name `mme_oip::READS_BINARY_TENSORS_SECTION`
            // holds one byte. `#[used]` keeps it although nothing reads it;
            // only a wasm build has it (other object formats name sections
            // otherwise, and a native build is for the model's own tests).
            #[cfg(target_family = "wasm")]
            #[allow(unsafe_code)] // SAFETY: plain bytes in a section of its own, never executed or aliased.
            #[used]
            #[unsafe(link_section = "mme:reads-binary-tensors")]
            static MME_READS_BINARY_TENSORS: [u8; 1] =
                [<$model as $crate::Model>::READS_BINARY_TENSORS as u8];

            impl $crate::bindings::Guest for MmeExport {
                fn load(
                    config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), $crate::Error> {
                    let config = $crate::Config::new(config);
                    let model = <$model as $crate::Model>::load(&config)?;
                    MODEL.with(|slot| *slot.borrow_mut() = ::core::option::Option::Some(model));
                    ::core::result::Result::Ok(())
                }

                fn predict(
                    batch: ::std::vec::Vec<$crate::Request>,
                ) -> ::std::vec::Vec<::core::result::Result<$crate::Response, $crate::Error>>
                {
                    MODEL.with(|slot| match &*slot.borrow() {
                        ::core::option::Option::Some(model) => $crate::__predict(model, batch),
                        ::core::option::Option::None => $crate::__not_loaded(batch.len()),
                    })
                }
            }

    $crate::bindings::__export_model_world!(MmeExport with_types_in $crate::bindings);
        };
    };
}

/// Runs the model's batch and wraps the answers to Open Inference Protocol
/// requests as the protocol's responses.
#[doc(hidden)]
pub fn __predict<M: Model>(model: &M, batch: Vec<Request>) -> Vec<Result<Response, Error>> {
    if batch.iter().any(|r| r.content_type == METADATA) {
        return batch
            .into_iter()
            .map(|request| {
                if request.content_type == METADATA {
                    Response::json(&model.metadata())
                } else {
                    __predict(model, vec![request])
                        .pop()
                        .unwrap_or_else(|| Err(Error::internal("the model returned no answer")))
                }
            })
            .collect();
    }
    let replies: Vec<Option<oip::Reply>> = batch
        .iter()
        .map(|request| {
            request
                .open_inference_header()
                .map(|header_length| oip::Reply::of(&request.body, header_length))
        })
        .collect();
    let answers = model.predict_batch(batch);
    answers
        .into_iter()
        .zip(replies)
        .map(|(answer, reply)| match reply {
            Some(reply) => answer.and_then(|response| oip::wrap(reply, response)),
            None => answer,
        })
        .collect()
}

/// The answer to a `predict` that arrives before a successful `load`.
#[doc(hidden)]
pub fn __not_loaded(count: usize) -> Vec<Result<Response, Error>> {
    (0..count)
        .map(|_| Err(Error::internal("predict was called before load succeeded")))
        .collect()
}
