//! `idvctl register-endpoint` against a mock Stripe (wiremock): `POST
//! /v1/webhook_endpoints` form-encoded with the Bearer key, the pinned
//! `Stripe-Version` and an `Idempotency-Key`; `url`, `enabled_events[]`
//! (the six Identity events by default, `--events` otherwise),
//! `api_version` pinned and `description`; the endpoint's id and secret
//! printed once with where the secret goes; a bad URL or event type a
//! usage error before Stripe is called; 401 exit 1; the key never shown.
//!
//! The command's `run` is called in-process (the tests crate cannot run
//! another package's binary); `exit_code` is `idvctl`'s own rule: a
//! `UsageError` or `ConfigError` is 2, any other error 1.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step should stop the test loudly

use clap::Parser;
use idv_tests::fixtures::fixture;
use shared::config::{ConfigError, Env};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};
use worker::ctl::register::RegisterEndpoint;
use worker::ctl::{CtlSettings, UsageError};
use worker::dispatch::stripe::STRIPE_VERSION;

const API_KEY: &str = "rk_test_idvRegister4242secretKEY";
/// The secret in `webhook_endpoint_create_response.json`.
const SECRET: &str = "whsec_0123456789abcdefABCDEFghijklmnop";
const ENDPOINT: &str = "we_1Sk3Aa2eZvKYlo2CkM2pQr9s";

const SIX_TYPES: [&str; 6] = [
    "identity.verification_session.created",
    "identity.verification_session.processing",
    "identity.verification_session.requires_input",
    "identity.verification_session.verified",
    "identity.verification_session.canceled",
    "identity.verification_session.redacted",
];

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    args: RegisterEndpoint,
}

/// `idvctl register-endpoint args…` against `stripe`, with `extra`
/// variables (which win); asserts the key is not shown.
async fn register(
    stripe: &MockServer,
    args: &[&str],
    extra: &[(&str, &str)],
) -> anyhow::Result<String> {
    let uri = stripe.uri();
    let mut pairs: Vec<(&str, &str)> = vec![
        ("STRIPE_API_KEY", API_KEY),
        ("STRIPE_API_BASE", &uri),
        ("STRIPE_API_BACKOFF_MS", "10"),
    ];
    pairs.retain(|(k, _)| !extra.iter().any(|(e, _)| e == k));
    pairs.extend_from_slice(extra);
    let env = Env::from_pairs(pairs);
    let settings = CtlSettings::from_env(&env).expect("valid idvctl settings");
    let cli = Cli::try_parse_from(std::iter::once("register-endpoint").chain(args.iter().copied()))
        .expect("valid arguments");
    let result = worker::ctl::register::run(&settings, &env, &cli.args).await;
    let shown = match &result {
        Ok(output) => output.clone(),
        Err(error) => format!("{error:#} {error:?}"),
    };
    assert!(!shown.contains(API_KEY), "the key is shown: {shown}");
    result
}

fn exit_code(result: &anyhow::Result<String>) -> i32 {
    match result {
        Ok(_) => 0,
        Err(error)
            if error.downcast_ref::<UsageError>().is_some()
                || error.downcast_ref::<ConfigError>().is_some() =>
        {
            2
        }
        Err(_) => 1,
    }
}

fn shown(result: &anyhow::Result<String>) -> String {
    match result {
        Ok(output) => output.clone(),
        Err(error) => format!("{error:#}"),
    }
}

/// A mock Stripe that creates endpoints, answering with the fixture
/// (its `enabled_events` replaced by `events`).
async fn stripe_creating(events: &[&str]) -> MockServer {
    let stripe = MockServer::start().await;
    let mut answer: serde_json::Value =
        serde_json::from_slice(&fixture("webhook_endpoint_create_response.json")).unwrap();
    answer["enabled_events"] = serde_json::json!(events);
    answer["url"] = serde_json::json!("https://idv.example.com/webhook");
    Mock::given(method("POST"))
        .and(path("/v1/webhook_endpoints"))
        .respond_with(ResponseTemplate::new(200).set_body_json(answer))
        .mount(&stripe)
        .await;
    stripe
}

/// The request's form body as (name, value) pairs, in order.
fn form(request: &Request) -> Vec<(String, String)> {
    assert_eq!(
        request
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/x-www-form-urlencoded"),
        "form-encoded"
    );
    let body = String::from_utf8(request.body.clone()).unwrap();
    let url = reqwest::Url::parse(&format!("http://form.invalid/?{body}")).unwrap();
    url.query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn values(form: &[(String, String)], name: &str) -> Vec<String> {
    form.iter()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.clone())
        .collect()
}

/// The one request Stripe received, checked for what every POST carries.
async fn the_request(stripe: &MockServer) -> Request {
    let mut requests = stripe.received_requests().await.unwrap_or_default();
    assert_eq!(requests.len(), 1, "one request");
    let request = requests.remove(0);
    assert_eq!(request.method.as_str(), "POST");
    assert_eq!(request.url.path(), "/v1/webhook_endpoints");
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    assert_eq!(header("authorization"), Some(format!("Bearer {API_KEY}")));
    assert_eq!(header("stripe-version").as_deref(), Some(STRIPE_VERSION));
    assert!(
        header("idempotency-key").is_some_and(|k| k.starts_with("idvctl-register-")),
        "an Idempotency-Key"
    );
    request
}

#[tokio::test]
async fn creates_the_endpoint_for_the_six_identity_events_and_prints_its_secret_once() {
    let stripe = stripe_creating(&SIX_TYPES).await;
    let result = register(&stripe, &["--url", "https://idv.example.com/webhook"], &[]).await;
    assert_eq!(exit_code(&result), 0, "{}", shown(&result));

    let request = the_request(&stripe).await;
    let form = form(&request);
    assert_eq!(values(&form, "url"), ["https://idv.example.com/webhook"]);
    assert_eq!(values(&form, "enabled_events[]"), SIX_TYPES, "{form:?}");
    assert_eq!(values(&form, "api_version"), [STRIPE_VERSION]);
    assert_eq!(values(&form, "description").len(), 1);

    let output = shown(&result);
    assert_eq!(
        output.matches(SECRET).count(),
        1,
        "the secret once: {output}"
    );
    assert!(
        output.starts_with(&format!("created webhook endpoint {ENDPOINT}")),
        "{output}"
    );
    assert!(
        output.contains("STRIPE_WEBHOOK_SECRET of idv-ingest"),
        "{output}"
    );
    assert!(output.contains("will not show it again"), "{output}");
    assert!(output.contains("comma-separated"), "{output}");
}

#[tokio::test]
async fn events_and_description_are_sent_as_given_and_json_carries_id_and_secret() {
    let chosen = [
        "identity.verification_session.verified",
        "identity.verification_session.requires_input",
    ];
    let stripe = stripe_creating(&chosen).await;
    let result = register(
        &stripe,
        &[
            "--url",
            "https://idv.example.com/webhook",
            "--events",
            "identity.verification_session.verified,identity.verification_session.requires_input",
            "--description",
            "staging idv",
            "--json",
        ],
        &[],
    )
    .await;
    assert_eq!(exit_code(&result), 0, "{}", shown(&result));
    let form = form(&the_request(&stripe).await);
    assert_eq!(values(&form, "enabled_events[]"), chosen, "{form:?}");
    assert_eq!(values(&form, "description"), ["staging idv"]);

    let json: serde_json::Value = serde_json::from_str(&shown(&result)).unwrap();
    assert_eq!(json["id"], ENDPOINT);
    assert_eq!(json["secret"], SECRET);
    assert_eq!(json["secret_goes_to"], "STRIPE_WEBHOOK_SECRET");
    assert_eq!(json["enabled_events"], serde_json::json!(chosen));
}

#[tokio::test]
async fn a_bad_url_or_event_type_is_exit_2_before_stripe_is_called() {
    let stripe = stripe_creating(&SIX_TYPES).await;
    for (args, says) in [
        (
            vec!["--url", "http://idv.example.com/webhook"],
            "expected https://",
        ),
        (vec!["--url", "idv.example.com/webhook"], "is not a URL"),
        (vec!["--url", "https://idv.example.com"], "names no path"),
        (
            vec![
                "--url",
                "https://idv.example.com/webhook",
                "--events",
                "identity.verification_session.verifed",
            ],
            "is not one of the six Identity session events",
        ),
        (
            vec![
                "--url",
                "https://idv.example.com/webhook",
                "--events",
                "charge.succeeded",
            ],
            "--events",
        ),
    ] {
        let result = register(&stripe, &args, &[]).await;
        assert_eq!(exit_code(&result), 2, "{args:?}: {}", shown(&result));
        assert!(
            shown(&result).contains(says),
            "{args:?}: {}",
            shown(&result)
        );
    }
    let no_key = register(
        &stripe,
        &["--url", "https://idv.example.com/webhook"],
        &[("STRIPE_API_KEY", "")],
    )
    .await;
    assert_eq!(exit_code(&no_key), 2, "{}", shown(&no_key));
    assert!(shown(&no_key).contains("STRIPE_API_KEY is not set"));
    let requests = stripe.received_requests().await.unwrap_or_default();
    assert!(requests.is_empty(), "Stripe was not called");
}

#[tokio::test]
async fn a_refused_key_is_exit_1_and_a_refused_request_shows_stripes_reason() {
    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/webhook_endpoints"))
        .respond_with(ResponseTemplate::new(401).set_body_string(format!(
            r#"{{"error":{{"message":"Invalid API Key provided: {API_KEY}","type":"invalid_request_error"}}}}"#
        )))
        .mount(&stripe)
        .await;
    let result = register(&stripe, &["--url", "https://idv.example.com/webhook"], &[]).await;
    assert_eq!(exit_code(&result), 1, "{}", shown(&result));
    assert!(
        shown(&result).contains("Stripe refused STRIPE_API_KEY (401 Unauthorized)"),
        "{}",
        shown(&result)
    );
    assert!(!shown(&result).contains("whsec_"));
    the_request(&stripe).await; // once: not retried

    let stripe = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/webhook_endpoints"))
        .respond_with(ResponseTemplate::new(400).set_body_string(
            r#"{"error":{"type":"invalid_request_error","code":"url_invalid",
                "message":"Invalid URL: URL must be publicly accessible.","param":"url"}}"#,
        ))
        .mount(&stripe)
        .await;
    let result = register(&stripe, &["--url", "https://127.0.0.1/webhook"], &[]).await;
    assert_eq!(exit_code(&result), 1, "{}", shown(&result));
    assert!(
        shown(&result).contains(
            "Stripe refused POST /v1/webhook_endpoints (400 Bad Request, invalid_request_error, \
             url_invalid): Invalid URL: URL must be publicly accessible. (param url)"
        ),
        "{}",
        shown(&result)
    );
    the_request(&stripe).await;
}
