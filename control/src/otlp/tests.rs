use std::time::{Duration, UNIX_EPOCH};

use super::*;
use infra_api::audit::Kind;

fn request_event() -> Event {
    Event {
        schema: SCHEMA_VERSION,
        id: "e-1".to_owned(),
        time: jiff::Timestamp::from_second(1_700_000_000).expect("time"),
        kind: Kind::Request,
        user: Some("suzie@example.com".to_owned()),
        groups: vec!["sre".to_owned(), "dev".to_owned()],
        destination: Some("production".to_owned()),
        method: Some("DELETE".to_owned()),
        path: Some("/api/v1/namespaces/web/pods/a".to_owned()),
        verb: Some("delete".to_owned()),
        resource: Some("pods".to_owned()),
        namespace: Some("web".to_owned()),
        name: Some("a".to_owned()),
        decision: Some("deny".to_owned()),
        code: Some(403),
        latency_us: Some(1500),
        source_ip: Some("127.0.0.1".to_owned()),
        ..Event::default()
    }
}

fn attribute_of<'a>(record: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
    record
        .attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

#[test]
fn the_logs_url_is_the_base_endpoint_and_v1_logs() {
    let url = |e: &str| logs_url(e).map(|u| u.to_string());
    assert_eq!(
        url("https://collector:4318").ok().as_deref(),
        Some("https://collector:4318/v1/logs")
    );
    assert_eq!(
        url("https://collector:4318/").ok().as_deref(),
        Some("https://collector:4318/v1/logs")
    );
    assert_eq!(
        url("https://vendor.example/otlp").ok().as_deref(),
        Some("https://vendor.example/otlp/v1/logs")
    );
    assert!(url("http://collector:4318").is_err());
    assert!(url("https://user:pw@collector").is_err());
    assert!(url("https://collector/?a=b").is_err());
}

#[test]
fn headers_take_literal_values_and_never_show_them() {
    let config = OtlpConfig::parse(
        "https://collector",
        &["Authorization=Bearer sekrit".to_owned()],
    )
    .expect("config");
    assert!(config.headers[0].1.is_sensitive());
    assert_eq!(config.headers[0].1, "Bearer sekrit");
    assert!(!format!("{config:?}").contains("sekrit"));
    assert!(OtlpConfig::parse("https://collector", &["novalue".to_owned()]).is_err());
    let missing = OtlpConfig::parse(
        "https://collector",
        &["x-key=env:INFRA_TEST_SURELY_NOT_SET".to_owned()],
    )
    .expect_err("unset variable");
    assert!(format!("{missing:#}").contains("INFRA_TEST_SURELY_NOT_SET"));
}

#[test]
fn a_denied_request_maps_to_a_warning_with_semantic_attributes() {
    let event = request_event();
    let record = log_record(&event, UNIX_EPOCH + Duration::from_secs(1_700_000_001));
    assert_eq!(record.time_unix_nano, 1_700_000_000_000_000_000);
    assert_eq!(record.observed_time_unix_nano, 1_700_000_001_000_000_000);
    assert_eq!(record.severity_number, SeverityNumber::Warn as i32);
    assert_eq!(record.severity_text, "WARN");
    assert_eq!(record.event_name, "infra.audit.request");
    let text = |key| match attribute_of(&record, key) {
        Some(any_value::Value::StringValue(s)) => Some(s.as_str()),
        _ => None,
    };
    assert_eq!(text("user.name"), Some("suzie@example.com"));
    assert_eq!(text("http.request.method"), Some("DELETE"));
    assert_eq!(text("k8s.namespace.name"), Some("web"));
    assert_eq!(text("client.address"), Some("127.0.0.1"));
    assert_eq!(text("log.record.uid"), Some("e-1"));
    assert_eq!(text("infra.decision"), Some("deny"));
    assert_eq!(text("infra.destination"), Some("production"));
    assert_eq!(text("user_agent.original"), None);
    assert_eq!(
        attribute_of(&record, "http.response.status_code"),
        Some(&any_value::Value::IntValue(403))
    );
    match attribute_of(&record, "infra.user.groups") {
        Some(any_value::Value::ArrayValue(list)) => assert_eq!(list.values.len(), 2),
        other => panic!("groups: {other:?}"),
    }
    // The body is the event itself.
    let Some(any_value::Value::StringValue(body)) = record.body.and_then(|b| b.value) else {
        panic!("a text body");
    };
    let back: Event = serde_json::from_str(&body).expect("the event's JSON");
    assert_eq!(back, event);
}

#[test]
fn allowed_and_successful_events_are_info() {
    let mut event = request_event();
    event.decision = Some("allow".to_owned());
    assert_eq!(
        log_record(&event, UNIX_EPOCH).severity_number,
        SeverityNumber::Info as i32
    );
    event.decision = None;
    assert!(!is_warning(&event));
    event.decision = Some("failure".to_owned());
    assert!(is_warning(&event));
}

#[test]
fn a_request_carries_the_resource_and_scope_once() {
    let event = request_event();
    let request = request([&event, &event], "replica-1", UNIX_EPOCH);
    let bytes = encode(&request);
    let back = ExportLogsServiceRequest::decode(bytes.as_slice()).expect("decodes");
    assert_eq!(back.resource_logs.len(), 1);
    let scope = &back.resource_logs[0].scope_logs[0];
    assert_eq!(scope.scope.as_ref().map(|s| s.name.as_str()), Some(SCOPE));
    assert_eq!(scope.scope.as_ref().map(|s| s.version.as_str()), Some("1"));
    assert_eq!(scope.log_records.len(), 2);
    let resource = back.resource_logs[0].resource.as_ref().expect("resource");
    assert!(resource.attributes.iter().any(|kv| kv.key == "service.name"
        && kv.value.as_ref().and_then(|v| v.value.as_ref())
            == Some(&any_value::Value::StringValue("infra".to_owned()))));
}

#[test]
fn answers_are_retried_refused_or_taken_as_otlp_says() {
    let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    assert_eq!(
        answer(StatusCode::OK, None, b"", now),
        Answer::Accepted {
            rejected: 0,
            message: String::new()
        }
    );
    let partial = ExportLogsServiceResponse {
        partial_success: Some(
            opentelemetry_proto::tonic::collector::logs::v1::ExportLogsPartialSuccess {
                rejected_log_records: 2,
                error_message: "too old".to_owned(),
            },
        ),
    };
    assert_eq!(
        answer(StatusCode::OK, None, &partial.encode_to_vec(), now),
        Answer::Accepted {
            rejected: 2,
            message: "too old".to_owned()
        }
    );
    for code in [429, 502, 503, 504] {
        let status = StatusCode::from_u16(code).expect("status");
        assert!(
            matches!(answer(status, Some("7"), b"", now), Answer::Retry { after: Some(d), .. } if d == Duration::from_secs(7)),
            "{code}"
        );
    }
    let status = RpcStatus {
        code: 3,
        message: "bad attribute".to_owned(),
    }
    .encode_to_vec();
    match answer(StatusCode::BAD_REQUEST, None, &status, now) {
        Answer::Refused { why } => assert!(why.contains("bad attribute"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        answer(StatusCode::INTERNAL_SERVER_ERROR, None, b"oops", now),
        Answer::Refused { .. }
    ));
}

#[test]
fn retry_after_takes_seconds_or_a_date() {
    let now = UNIX_EPOCH + Duration::from_secs(1_445_412_470);
    assert_eq!(retry_after("120", now), Some(Duration::from_mins(2)));
    assert_eq!(
        retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now),
        Some(Duration::from_secs(10))
    );
    assert_eq!(retry_after("soon", now), None);
}
