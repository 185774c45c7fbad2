//! The SageMaker multi-model blog's model as a Wasm MME guest: a linear
//! regression fitted by linfa on y = 2x + 1, loaded from `/model/model.bin`.
//!
//! `POST [[0.5]]` answers `[2.0…]`: one number per row.

use linfa::traits::Predict;
use linfa_linear::FittedLinearRegression;
use mme_guest::{Config, Error, Model, OUTPUT_NAME, Request, Response, export_model};
use ndarray::Array2;

/// The artifact the trainer writes, unless `option.model_file` names another.
pub const DEFAULT_MODEL_FILE: &str = "model.bin";

/// The fitted model, decoded once per instance.
struct LinearRegression {
    fitted: FittedLinearRegression<f64>,
}

impl Model for LinearRegression {
    /// It reads its input only through `Request::matrix`, so binary tensors
    /// reach it as bytes.
    const READS_BINARY_TENSORS: bool = true;

    fn load(config: &Config) -> Result<Self, Error> {
        let file = config.get("model_file").unwrap_or(DEFAULT_MODEL_FILE);
        let path = format!("/model/{file}");
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::internal(format!("cannot read {path}: {e}")))?;
        let (fitted, _) = bincode::serde::decode_from_slice(&bytes, bincode::config::standard())
            .map_err(|e| {
                Error::internal(format!("{path} is not a fitted linear regression: {e}"))
            })?;
        Ok(LinearRegression { fitted })
    }

    fn predict(&self, request: Request) -> Result<Response, Error> {
        let input = request.matrix()?;
        let features = self.fitted.params().len();
        if input.cols != features {
            return Err(Error::invalid_input(format!(
                "each row needs {features} feature(s), got {}",
                input.cols
            )));
        }
        let x = Array2::from_shape_vec((input.rows, input.cols), input.data)
            .map_err(|e| Error::internal(format!("cannot shape the input: {e}")))?;
        let y = self.fitted.predict(&x);
        Response::json(&y.to_vec())
    }

    /// Declared, so that clients that build requests from the model's
    /// metadata (Triton's perf_analyzer, KServe's clients) know what to send:
    /// rows of as many features as the fit had, one number back per row.
    fn metadata(&self) -> serde_json::Value {
        let features = self.fitted.params().len();
        serde_json::json!({
            "inputs": [{ "name": "input-0", "datatype": "FP64", "shape": [-1, features] }],
            "outputs": [{ "name": OUTPUT_NAME, "datatype": "FP64", "shape": [-1] }],
        })
    }
}

export_model!(LinearRegression);
