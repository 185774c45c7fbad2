//! Decoding request bodies and encoding responses, so that authors rarely touch bytes.

use std::fmt;

use serde::Serialize;
use serde::de::{DeserializeOwned, DeserializeSeed, Deserializer, SeqAccess, Visitor};

use crate::oip::OIP_JSON;
use crate::{Error, Request, Response};

/// The content type of JSON bodies, and the default when a request names none.
pub const JSON: &str = "application/json";
/// The content type of CSV bodies: one row per line, no header.
pub const CSV: &str = "text/csv";

/// A dense matrix of numbers, row-major: one row per example, one column per feature.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// The number of rows.
    pub rows: usize,
    /// The number of columns; every row has this many.
    pub cols: usize,
    /// `rows * cols` values, row after row.
    pub data: Vec<f64>,
}

impl Matrix {
    /// Builds a matrix from rows that must all have the same length.
    pub fn from_rows(rows: Vec<Vec<f64>>) -> Result<Self, Error> {
        let cols = rows.first().map_or(0, Vec::len);
        let mut data = Vec::with_capacity(rows.len() * cols);
        for (index, row) in rows.iter().enumerate() {
            if row.len() != cols {
                return Err(ragged_row(index, row.len(), cols));
            }
            data.extend_from_slice(row);
        }
        Ok(Matrix {
            rows: rows.len(),
            cols,
            data,
        })
    }

    /// The rows, each a slice of `cols` values.
    pub fn rows(&self) -> impl Iterator<Item = &[f64]> {
        // `max(1)` keeps `chunks_exact` valid for a matrix with no columns.
        self.data.chunks_exact(self.cols.max(1))
    }
}

impl Request {
    /// A JSON request with `body`, as a client would send it; handy in tests.
    pub fn json_body(body: impl Into<Vec<u8>>) -> Self {
        Request {
            content_type: JSON.to_string(),
            accept: String::new(),
            body: body.into(),
            attributes: String::new(),
        }
    }

    /// Decodes a JSON body into `T`; a body that does not fit is invalid input.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        serde_json::from_slice(&self.body).map_err(|e| {
            Error::invalid_input(format!("the body is not the JSON this model expects: {e}"))
        })
    }

    /// Decodes the body as a matrix: JSON rows such as `[[0.5],[1.0]]`, CSV
    /// (`text/csv`) with one row per line and no header, or the first input
    /// tensor of an Open Inference Protocol request (its `data`, or its
    /// binary data for a model that [reads binary tensors](crate::Model::READS_BINARY_TENSORS)).
    pub fn matrix(&self) -> Result<Matrix, Error> {
        if let Some(header_length) = mme_oip::framed_header_length(&self.content_type) {
            return crate::oip::matrix(&self.body, Some(header_length));
        }
        let media_type = media_type(&self.content_type);
        let is = |name: &str| media_type.eq_ignore_ascii_case(name);
        if media_type.is_empty() || is(JSON) {
            json_rows(&self.body)
        } else if is(CSV) {
            parse_csv(&self.body)
        } else if is(OIP_JSON) {
            crate::oip::matrix(&self.body, None)
        } else {
            Err(Error::invalid_input(format!(
                "unsupported content type {media_type:?}: send {JSON} or {CSV}"
            )))
        }
    }

    /// Whether this is an Open Inference Protocol (KServe v2) request, whose
    /// answer the SDK wraps as the protocol's response.
    pub fn is_open_inference(&self) -> bool {
        self.open_inference_header().is_some()
    }

    /// For a v2 request, the length of its JSON header: `Some(None)` when
    /// the body is JSON alone, `Some(Some(n))` when binary tensors follow
    /// `n` bytes of JSON; `None` for any other request.
    pub(crate) fn open_inference_header(&self) -> Option<Option<usize>> {
        if let Some(length) = mme_oip::framed_header_length(&self.content_type) {
            return Some(Some(length));
        }
        media_type(&self.content_type)
            .eq_ignore_ascii_case(OIP_JSON)
            .then_some(None)
    }
}

impl Response {
    /// A response of `body` as it is, sent with `content_type`: for a model
    /// that writes its own bytes (a format of its own, or JSON it printed
    /// faster than a serializer would).
    pub fn new(content_type: impl Into<String>, body: impl Into<Vec<u8>>) -> Self {
        Response {
            content_type: content_type.into(),
            body: body.into(),
            attributes: String::new(),
        }
    }

    /// A JSON response holding `value`.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, Error> {
        let body = serde_json::to_vec(value)
            .map_err(|e| Error::internal(format!("cannot encode the response as JSON: {e}")))?;
        Ok(Response::new(JSON, body))
    }

    /// The same response, sending `attributes` back to the caller as
    /// `X-Amzn-SageMaker-Custom-Attributes`.
    pub fn with_attributes(mut self, attributes: impl Into<String>) -> Self {
        self.attributes = attributes.into();
        self
    }
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
/// JSON rows such as `[[0.5],[1.0]]` read straight into one row-major
/// buffer: no vector per row to copy from (every plain request of a model
/// that reads a matrix comes this way).
fn json_rows(body: &[u8]) -> Result<Matrix, Error> {
    let mut rows = Rows::default();
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    serde::Deserializer::deserialize_seq(&mut deserializer, &mut rows)
        .and_then(|()| deserializer.end())
        .map_err(|_| {
            Error::invalid_input("expected a JSON array of rows of numbers, such as [[0.5],[1.0]]")
        })?;
    let cols = rows.cols.unwrap_or_default();
    if let Some((index, len)) = rows.ragged {
        return Err(ragged_row(index, len, cols));
    }
    Ok(Matrix {
        rows: rows.rows,
        cols,
        data: rows.data,
    })
}

fn ragged_row(index: usize, len: usize, cols: usize) -> Error {
    Error::invalid_input(format!(
        "row {index} has {len} values but row 0 has {cols}; every row needs the same number of features"
    ))
}

/// What [`json_rows`] has read so far: the values, the rows, the first
/// row's length, and the first row of another length.
#[derive(Default)]
struct Rows {
    data: Vec<f64>,
    rows: usize,
    cols: Option<usize>,
    ragged: Option<(usize, usize)>,
}

impl<'de> Visitor<'de> for &mut Rows {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut rows: A) -> Result<(), A::Error> {
        while rows.next_element_seed(Row(&mut *self))?.is_some() {}
        Ok(())
    }
}

/// One row of [`Rows`], appended to its buffer.
struct Row<'r>(&'r mut Rows);

impl<'de> DeserializeSeed<'de> for Row<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Row<'_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a row of numbers")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut values: A) -> Result<(), A::Error> {
        let rows = self.0;
        let start = rows.data.len();
        while let Some(value) = values.next_element::<f64>()? {
            rows.data.push(value);
        }
        let len = rows.data.len() - start;
        match rows.cols {
            None => rows.cols = Some(len),
            Some(cols) if cols != len && rows.ragged.is_none() => {
                rows.ragged = Some((rows.rows, len));
            }
            Some(_) => {}
        }
        rows.rows += 1;
        Ok(())
    }
}

/// The media type of a content type, without its parameters; compared
/// without regard to case, as HTTP's are, and not copied (every request
/// asks).
fn media_type(content_type: &str) -> &str {
    content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

fn parse_csv(body: &[u8]) -> Result<Matrix, Error> {
    let text = std::str::from_utf8(body)
        .map_err(|_| Error::invalid_input("the CSV body is not valid UTF-8"))?;
    let rows = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(line_index, line)| {
            line.split(',')
                .enumerate()
                .map(|(col, cell)| {
                    cell.trim().parse::<f64>().map_err(|_| {
                        Error::invalid_input(format!(
                            "CSV line {}, column {}: {:?} is not a number",
                            line_index + 1,
                            col + 1,
                            cell.trim()
                        ))
                    })
                })
                .collect::<Result<Vec<f64>, Error>>()
        })
        .collect::<Result<Vec<_>, Error>>()?;
    Matrix::from_rows(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(content_type: &str, body: &str) -> Request {
        Request {
            content_type: content_type.into(),
            accept: String::new(),
            body: body.as_bytes().to_vec(),
            attributes: String::new(),
        }
    }

    fn invalid_message(result: Result<Matrix, Error>) -> String {
        match result {
            Err(Error::InvalidInput(message)) => message,
            other => panic!("expected invalid input, got {other:?}"),
        }
    }

    #[test]
    fn responses_carry_their_bytes_and_type_as_given() {
        let csv = Response::new("text/csv", "1\n2\n");
        assert_eq!(
            (
                csv.content_type.as_str(),
                csv.body.as_slice(),
                csv.attributes.as_str()
            ),
            ("text/csv", &b"1\n2\n"[..], "")
        );
        let json = Response::json(&[1.5, 2.0]).unwrap();
        assert_eq!(
            (json.content_type.as_str(), json.body.as_slice()),
            (JSON, &b"[1.5,2.0]"[..])
        );
    }

    #[test]
    fn json_matrix_is_read_row_major() {
        let m = request("application/json", "[[1, 2], [3.5, 4]]")
            .matrix()
            .unwrap();
        assert_eq!((m.rows, m.cols), (2, 2));
        assert_eq!(m.data, vec![1.0, 2.0, 3.5, 4.0]);
        assert_eq!(m.rows().nth(1), Some(&[3.5, 4.0][..]));
    }

    #[test]
    fn missing_content_type_means_json_and_parameters_are_ignored() {
        assert_eq!(request("", "[[0.5]]").matrix().unwrap().data, vec![0.5]);
        let m = request("Application/JSON; charset=utf-8", "[[0.5]]")
            .matrix()
            .unwrap();
        assert_eq!(m.data, vec![0.5]);
    }

    #[test]
    fn csv_rows_are_read_and_blank_lines_skipped() {
        let m = request("text/csv", "1,2\n\n3, 4\r\n").matrix().unwrap();
        assert_eq!((m.rows, m.cols), (2, 2));
        assert_eq!(m.data, vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn json_rows_read_as_rows_of_vectors_read() {
        for body in [
            "[[1, 2], [3.5, 4]]",
            " [ [0.5] ] ",
            "[]",
            "[[]]",
            "[[], []]",
            "[[1], [2, 3]]",
            "[[1, 2], [3], [4, 5, 6]]",
            "[[1], []]",
            "[[1e308, -0.0, 5]]",
            // Not rows of numbers: both refuse.
            "[[1], [\"a\"]]",
            "[[1], 2]",
            "[1, 2]",
            "[[1]] x",
            "[[1]",
            "{\"a\": 1}",
            "[[null]]",
            "[[1e999]]",
        ] {
            let vectors = serde_json::from_slice::<Vec<Vec<f64>>>(body.as_bytes())
                .map_err(|_| ())
                .map(|rows| Matrix::from_rows(rows).map_err(|e| format!("{e:?}")));
            let flat = json_rows(body.as_bytes()).map_err(|e| format!("{e:?}"));
            match vectors {
                Ok(expected) => assert_eq!(flat, expected, "{body}"),
                Err(()) => assert!(
                    flat.as_ref()
                        .is_err_and(|e| e.contains("expected a JSON array")),
                    "{body}: {flat:?}"
                ),
            }
        }
    }

    #[test]
    fn ragged_rows_are_invalid_input() {
        let message = invalid_message(request(JSON, "[[1,2],[3]]").matrix());
        assert!(message.contains("row 1 has 1 values"), "{message}");
    }

    #[test]
    fn hostile_bodies_are_invalid_input_not_panics() {
        for body in ["", "{", "[[\"a\"]]", "[1,2]", "null", "[[1e999999]]"] {
            invalid_message(request(JSON, body).matrix());
        }
        let message = invalid_message(request(CSV, "1,x").matrix());
        assert!(message.contains("line 1, column 2"), "{message}");
        let bytes = Request {
            body: vec![0xff, 0xfe],
            ..request(CSV, "")
        };
        invalid_message(bytes.matrix());
        let message = invalid_message(request("image/png", "[[1]]").matrix());
        assert!(message.contains("image/png"), "{message}");
    }

    #[test]
    fn json_response_has_json_content_type() {
        let response = Response::json(&[1.5, 2.0]).unwrap();
        assert_eq!(response.content_type, JSON);
        assert_eq!(response.body, b"[1.5,2.0]");
    }
}
