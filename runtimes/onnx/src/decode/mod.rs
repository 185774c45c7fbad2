//! Request bodies to typed values: no tract here, so that the fuzz target
//! builds only this.
//!
//! The plain routes take one JSON array (any depth: a matrix for a table,
//! deeper for images) or CSV rows, for a graph with one input. The Open
//! Inference Protocol takes a named tensor per input. Values are converted
//! to the input's element type; an integer input refuses fractions.

mod array;
mod infer;
mod numbers;

pub use array::Scalar;
use array::Walk;
pub use infer::{
    InferRequest, InferTensor, OutputParameters, RequestParameters, RequestedOutput,
    TensorParameters,
};

/// Why a JSON body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// It is not JSON at all.
    #[error("{0}")]
    Syntax(serde_json::Error),
    /// It is JSON, but not values in arrays of one shape.
    #[error("{0}")]
    Content(serde_json::Error),
}

impl From<serde_json::Error> for BodyError {
    fn from(error: serde_json::Error) -> Self {
        match error.classify() {
            serde_json::error::Category::Data => BodyError::Content(error),
            _ => BodyError::Syntax(error),
        }
    }
}

/// The kinds of element a request can fill.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// 32-bit floats.
    F32,
    /// 64-bit floats.
    F64,
    /// Integers of any width (checked to be whole; narrowed by the engine).
    Int,
    /// Booleans (numbers: 0 is false).
    Bool,
    /// Strings (`BYTES` on v2).
    String,
}

/// What an input takes.
#[derive(Debug, Clone, Copy)]
pub struct Wanted<'a> {
    /// Its name, for messages.
    pub name: &'a str,
    /// Its element type.
    pub element: Element,
    /// Its dimensions; `None` where any size goes.
    pub shape: &'a [Option<usize>],
}

/// Values of one type, flat.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    /// For [`Element::F32`].
    F32(Vec<f32>),
    /// For [`Element::F64`].
    F64(Vec<f64>),
    /// For [`Element::Int`].
    Int(Vec<i64>),
    /// For [`Element::Bool`].
    Bool(Vec<bool>),
    /// For [`Element::String`].
    String(Vec<String>),
}

impl Data {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Data::F32(v) => v.len(),
            Data::F64(v) => v.len(),
            Data::Int(v) => v.len(),
            Data::Bool(v) => v.len(),
            Data::String(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An input's values, checked: `shape` holds `data.len()` values.
#[derive(Debug, Clone, PartialEq)]
pub struct Typed {
    /// The dimensions.
    pub shape: Vec<usize>,
    /// The values, row-major.
    pub data: Data,
}

/// A tensor as it arrived: its shape and its values, flat.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    /// Its dimensions.
    pub shape: Vec<usize>,
    /// Its values, row-major.
    pub values: Values,
}

/// The values of a tensor as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    /// Only numbers (the common body, and every CSV body): no [`Scalar`]
    /// per value, and a float input takes them in one pass.
    Numbers(Vec<f64>),
    /// Any mix of numbers, strings, booleans and nulls.
    Scalars(Vec<Scalar>),
    /// 32-bit floats as a binary tensor carries them: a float input takes
    /// them as they are.
    F32(Vec<f32>),
}

impl Values {
    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Values::Numbers(v) => v.len(),
            Values::Scalars(v) => v.len(),
            Values::F32(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The largest number of values one request may send; the instance's
/// memory cap bounds it anyway, this gives a clear message first.
const MAX_VALUES: usize = 1 << 26;

impl Sent {
    /// A body that holds one nested JSON array: its nesting is its shape;
    /// ragged arrays are refused.
    pub fn from_json(body: &[u8]) -> Result<Sent, BodyError> {
        if let Some((shape, numbers)) = numbers::numbers_only(body) {
            return Ok(Sent {
                shape,
                values: Values::Numbers(numbers),
            });
        }
        let mut json = serde_json::Deserializer::from_slice(body);
        let (shape, values) = Walk::shaped(&mut json).and_then(|read| {
            json.end()?;
            Ok(read)
        })?;
        Ok(Sent {
            shape,
            values: Values::Scalars(values),
        })
    }

    /// CSV rows (no header), one example per line.
    pub fn from_csv(body: &[u8]) -> Result<Sent, String> {
        let text =
            std::str::from_utf8(body).map_err(|_| "the CSV body is not UTF-8".to_string())?;
        let mut values = Vec::new();
        let mut rows = 0;
        let mut columns = None;
        for (line_number, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            let mut count = 0;
            for field in line.split(',') {
                let field = field.trim();
                let number: f64 = field.parse().map_err(|_| {
                    format!("CSV line {}: {field:?} is not a number", line_number + 1)
                })?;
                values.push(number);
                count += 1;
            }
            match columns {
                None => columns = Some(count),
                Some(c) if c != count => {
                    return Err(format!(
                        "CSV line {} has {count} values but the first line has {c}",
                        line_number + 1
                    ));
                }
                Some(_) => {}
            }
            rows += 1;
        }
        Ok(Sent {
            shape: vec![rows, columns.unwrap_or(0)],
            values: Values::Numbers(values),
        })
    }

    /// The values for an input named `name` of `element`s with `shape`
    /// (`None` where any size goes): same rank (one row may leave out the
    /// batch axis), every fixed dimension matching, values of that type.
    pub fn fit(mut self, port: &Wanted<'_>) -> Result<Typed, String> {
        if self.shape.len() + 1 == port.shape.len() {
            self.shape.insert(0, 1);
        }
        if self.shape.len() != port.shape.len() {
            return Err(format!(
                "input {:?} takes {} dimensions ({}), but {} were sent",
                port.name,
                port.shape.len(),
                describe_shape(port.shape),
                self.shape.len()
            ));
        }
        for (axis, (sent, wanted)) in self.shape.iter().zip(port.shape).enumerate() {
            if let Some(wanted) = wanted
                && wanted != sent
            {
                return Err(format!(
                    "input {:?} has shape {}; axis {axis} was sent with {sent} values instead of {wanted}",
                    port.name,
                    describe_shape(port.shape)
                ));
            }
        }
        let data = typed(port.name, port.element, &self.shape, self.values)?;
        Ok(Typed {
            shape: self.shape,
            data,
        })
    }
}

fn describe_shape(shape: &[Option<usize>]) -> String {
    let dims: Vec<String> = shape
        .iter()
        .map(|d| d.map_or_else(|| "any".to_string(), |d| d.to_string()))
        .collect();
    format!("[{}]", dims.join(", "))
}

/// `values` as `element`s, checked against `shape`.
fn typed(name: &str, element: Element, shape: &[usize], values: Values) -> Result<Data, String> {
    let count = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if count != Some(values.len()) {
        return Err(format!(
            "input {name:?} has shape {shape:?} but {} values were sent",
            values.len()
        ));
    }
    let values = match (values, element) {
        (Values::F32(floats), Element::F32) => return Ok(Data::F32(floats)),
        (Values::F32(floats), Element::F64) => {
            return Ok(Data::F64(floats.into_iter().map(f64::from).collect()));
        }
        (Values::F32(floats), _) => floats
            .into_iter()
            .map(|x| Scalar::Number(f64::from(x)))
            .collect(),
        (Values::Numbers(numbers), Element::F64) => return Ok(Data::F64(numbers)),
        (Values::Numbers(numbers), Element::F32) => {
            return Ok(Data::F32(numbers.iter().map(|&x| x as f32).collect()));
        }
        (Values::Numbers(numbers), _) => numbers.into_iter().map(Scalar::Number).collect(),
        (Values::Scalars(values), _) => values,
    };
    let number = |v: &Scalar| -> Result<f64, String> {
        match v {
            Scalar::Number(x) => Ok(*x),
            Scalar::Bool(b) => Ok(f64::from(u8::from(*b))),
            other => Err(format!("input {name:?} takes numbers, not {other}")),
        }
    };
    // JSON has no NaN: a missing value (what an Imputer fills in) is null.
    let float = |v: &Scalar| -> Result<f64, String> {
        match v {
            Scalar::Null => Ok(f64::NAN),
            other => number(other),
        }
    };
    let integer = |v: &Scalar| -> Result<i64, String> {
        let x = number(v)?;
        if x.fract() != 0.0 || x.abs() > 9.0e15 {
            return Err(format!("input {name:?} takes integers, not {x}"));
        }
        Ok(x as i64)
    };
    Ok(match element {
        Element::F32 => Data::F32(
            values
                .iter()
                .map(|v| float(v).map(|x| x as f32))
                .collect::<Result<_, _>>()?,
        ),
        Element::F64 => Data::F64(values.iter().map(float).collect::<Result<_, _>>()?),
        Element::Int => Data::Int(values.iter().map(integer).collect::<Result<_, _>>()?),
        Element::Bool => Data::Bool(
            values
                .iter()
                .map(|v| number(v).map(|x| x != 0.0))
                .collect::<Result<_, _>>()?,
        ),
        Element::String => Data::String(
            values
                .iter()
                .map(|v| match v {
                    Scalar::Text(s) => Ok(s.clone()),
                    other => Err(format!("input {name:?} takes strings, not {other}")),
                })
                .collect::<Result<_, _>>()?,
        ),
    })
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
