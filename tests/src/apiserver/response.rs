//! Building answers: whole bodies (text, JSON, `Table`s, `Status`es) and streamed ones.

use std::convert::Infallible;

use bytes::Bytes;
use futures_util::StreamExt as _;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use serde_json::Value;

use super::status::Status;
use super::{Body, discovery};

pub(super) fn full(code: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(Full::new(body.into()).boxed_unsync())
        .expect("static headers are valid")
}

pub(super) fn empty() -> Body {
    Full::new(Bytes::new()).boxed_unsync()
}

pub(super) fn plain(code: StatusCode, text: &'static str) -> Response<Body> {
    full(code, "text/plain; charset=utf-8", text)
}

pub(super) fn json_text(code: StatusCode, text: &str) -> Response<Body> {
    full(code, "application/json", text.to_owned())
}

pub(super) fn json_response(code: StatusCode, value: &Value) -> Response<Body> {
    full(
        code,
        "application/json",
        serde_json::to_vec(value).expect("JSON values serialize"),
    )
}

pub(super) fn aggregated_response(text: &'static str) -> Response<Body> {
    let mut response = full(StatusCode::OK, discovery::AGGREGATED_V2, text);
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept"));
    response
}

pub(super) fn table_response(version: &str, table: &Value) -> Response<Body> {
    full(
        StatusCode::OK,
        &format!("application/json;as=Table;v={version};g=meta.k8s.io"),
        serde_json::to_vec(table).expect("JSON values serialize"),
    )
}

pub(super) fn status_response(status: &Status) -> Response<Body> {
    json_response(status.code, &status.to_json())
}

pub(super) fn streaming(
    code: StatusCode,
    content_type: &str,
    stream: impl futures_util::Stream<Item = Bytes> + Send + 'static,
) -> Response<Body> {
    let body = StreamBody::new(stream.map(|chunk| Ok::<_, Infallible>(Frame::data(chunk))));
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, content_type)
        .body(body.boxed_unsync())
        .expect("static headers are valid")
}
