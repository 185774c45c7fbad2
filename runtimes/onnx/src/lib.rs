//! The built-in ONNX engine: tract, compiled to a wasm component of the
//! `mme:model` world, so that a model file from scikit-learn, XGBoost,
//! LightGBM or PyTorch runs inside the same sandbox as any other model.
//!
//! One compiled engine serves every ONNX model. Its `load` reads the
//! package's `.onnx` file from `/model`, so parsing and optimising an
//! untrusted graph happen under the instance's memory cap and deadline.
//! The engine adds the ONNX-ML operators that converters emit and tract
//! lacks; [`decode`] turns request bodies into typed values.

pub mod decode;
#[cfg(feature = "engine")]
mod engine;

#[cfg(feature = "engine")]
pub use engine::OnnxModel;
