//! Tests of the shared HTTP plumbing.

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode};

use super::errors::untrusted_certificate;
use super::*;
use crate::ConnectorError;
use reqwest::header::HeaderValue;

#[test]
fn a_certificate_error_is_found_inside_nested_io_errors_and_nothing_else_is() {
    use std::io::{Error, ErrorKind};
    let untrusted = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
    // The shape reqwest hands over: the connector's io::Error around the stream's.
    let nested = Error::other(Error::new(ErrorKind::InvalidData, untrusted));
    assert_eq!(
        untrusted_certificate(&nested).as_deref(),
        Some("invalid peer certificate: UnknownIssuer")
    );
    let other_tls = Error::new(ErrorKind::InvalidData, rustls::Error::DecryptError);
    assert_eq!(untrusted_certificate(&other_tls), None);
    let refused = Error::new(ErrorKind::ConnectionRefused, "connection refused");
    assert_eq!(untrusted_certificate(&refused), None);
}

#[test]
fn secret_never_prints_its_value() {
    let secret = Secret::new("hunter2");
    assert_eq!(format!("{secret}"), "***");
    assert_eq!(format!("{secret:?}"), "***");
    assert_eq!(secret.expose(), "hunter2");
}

#[test]
fn retry_after_seconds_and_http_date_are_parsed() {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
    assert_eq!(parse_retry_after(&headers), Some(Duration::from_secs(7)));
    headers.insert(
        RETRY_AFTER,
        HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
    );
    assert_eq!(parse_retry_after(&headers), Some(Duration::ZERO));
    headers.insert(RETRY_AFTER, HeaderValue::from_static("soon"));
    assert_eq!(parse_retry_after(&headers), None);
}

#[test]
fn statuses_are_classified_with_the_service_message() {
    let mut headers = HeaderMap::new();
    headers.insert(RETRY_AFTER, HeaderValue::from_static("3"));
    let body = br#"{"error":{"code":"0x80072322","message":"Number of requests exceeded"}}"#;
    let throttled = classify_status(StatusCode::TOO_MANY_REQUESTS, &headers, body, "GET x");
    assert_eq!(
        throttled,
        ConnectorError::Transient {
            message: "GET x failed with 429 Too Many Requests: Number of requests exceeded"
                .to_string(),
            retry_after: Some(Duration::from_secs(3)),
        }
    );
    let missing = classify_status(StatusCode::NOT_FOUND, &HeaderMap::new(), b"nope", "GET y");
    assert_eq!(
        missing,
        ConnectorError::Permanent {
            message: "GET y failed with 404 Not Found: nope".to_string()
        }
    );
    assert!(
        classify_status(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"", "GET z").is_transient()
    );
    assert!(
        classify_status(StatusCode::REQUEST_TIMEOUT, &HeaderMap::new(), b"", "GET z")
            .is_transient()
    );
}

#[test]
fn unparsable_body_is_retryable_and_names_the_url_and_the_expectation() {
    let error = parse_json::<serde_json::Value>(b"<html>", "https://x/y", "a JSON page")
        .expect_err("html is not json");
    let ConnectorError::Transient { message, .. } = error else {
        panic!("expected a transient error, got {error:?}");
    };
    assert!(message.contains("https://x/y"), "{message}");
    assert!(message.contains("a JSON page"), "{message}");
}

#[tokio::test]
async fn pause_holds_back_new_requests_until_it_ends() {
    let pacer = Pacer::new(2);
    pacer.pause_for(Duration::from_millis(150));
    let started = Instant::now();
    let _permit = pacer.acquire().await;
    assert!(started.elapsed() >= Duration::from_millis(140));
    assert!(pacer.remaining_pause().is_none());
}

#[tokio::test]
async fn with_retry_stops_after_the_attempt_budget() {
    let policy = RetryPolicy {
        max_attempts: 3,
        base_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    };
    let pacer = Pacer::new(1);
    let calls = std::sync::atomic::AtomicU32::new(0);
    let result: Result<(), ConnectorError> = with_retry(&policy, &pacer, || {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async {
            Err(ConnectorError::Transient {
                message: "down".to_string(),
                retry_after: None,
            })
        }
    })
    .await;
    assert!(result.is_err_and(|error| error.is_transient()));
    assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// A fake identity provider and API counting their calls; the API answers `api_status`.
async fn fake_service(
    expires_in: u64,
    api_status: u16,
) -> (
    String,
    std::sync::Arc<std::sync::atomic::AtomicU32>,
    std::sync::Arc<std::sync::atomic::AtomicU32>,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    let token_calls = Arc::new(AtomicU32::new(0));
    let api_calls = Arc::new(AtomicU32::new(0));
    let (tokens, apis) = (Arc::clone(&token_calls), Arc::clone(&api_calls));
    let router = axum::Router::new()
        .route(
            "/token",
            axum::routing::post(move || {
                let n = tokens.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    axum::Json(serde_json::json!({
                        "token_type": "Bearer", "expires_in": expires_in, "access_token": format!("token-{n}")
                    }))
                }
            }),
        )
        .route(
            "/api",
            axum::routing::get(move || {
                apis.fetch_add(1, Ordering::SeqCst);
                async move {
                    // A throttled answer asks for a long pause, as a busy service does.
                    let retry_after = if api_status == 429 { "120" } else { "" };
                    (
                        axum::http::StatusCode::from_u16(api_status).unwrap_or_default(),
                        [(RETRY_AFTER, retry_after)],
                        "{}",
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (format!("http://{addr}"), token_calls, api_calls)
}

fn cache(base: &str, margin: Duration) -> TokenCache {
    TokenCache::new(
        reqwest::Client::new(),
        ClientCredentials {
            token_url: format!("{base}/token"),
            client_id: "id".to_string(),
            client_secret: Secret::new("s"),
            scope: "x/.default".to_string(),
        },
        margin,
    )
}

#[tokio::test]
async fn token_is_cached_and_a_stale_refresh_reuses_the_newer_token() {
    use std::sync::atomic::Ordering;
    let (base, token_calls, _) = fake_service(3599, 200).await;
    let tokens = cache(&base, Duration::from_secs(300));
    let first = tokens.token().await.expect("token");
    assert_eq!(tokens.token().await.expect("cached"), first);
    assert_eq!(token_calls.load(Ordering::SeqCst), 1);
    let second = tokens.refresh(&first).await.expect("refreshed");
    assert_ne!(second, first);
    // Another task reporting the same old token gets the new one without a fetch.
    assert_eq!(tokens.refresh(&first).await.expect("reused"), second);
    assert_eq!(token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn token_close_to_expiry_is_refetched() {
    use std::sync::atomic::Ordering;
    let (base, token_calls, _) = fake_service(0, 200).await;
    let tokens = cache(&base, Duration::from_secs(300));
    tokens.token().await.expect("token");
    tokens.token().await.expect("token");
    assert_eq!(token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn persistent_401_refreshes_exactly_once_then_fails_with_auth() {
    use std::sync::atomic::Ordering;
    let (base, token_calls, api_calls) = fake_service(3599, 401).await;
    let client = ApiClient::new(
        build_client(Duration::from_secs(5), None, 2).expect("client"),
        cache(&base, Duration::from_secs(300)),
        Pacer::new(2),
        RetryPolicy::default(),
    );
    let error = client
        .execute(Method::GET, &format!("{base}/api"), |request| request)
        .await
        .expect_err("always 401");
    assert!(matches!(error, ConnectorError::Auth { .. }), "{error:?}");
    assert_eq!(token_calls.load(Ordering::SeqCst), 2);
    assert_eq!(api_calls.load(Ordering::SeqCst), 2);
}

/// An API client over `http`, with tokens from `base`, two requests at a time and
/// `max_attempts` tries a few milliseconds apart.
fn api_over(http: HttpClient, base: &str, max_attempts: u32) -> ApiClient {
    ApiClient::new(
        http,
        cache(base, Duration::from_secs(300)),
        Pacer::new(2),
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
        },
    )
}

#[tokio::test]
async fn transient_statuses_are_retried_within_the_attempt_budget() {
    use std::sync::atomic::Ordering;
    let (base, _, api_calls) = fake_service(3599, 503).await;
    let client = api_over(
        build_client(Duration::from_secs(5), None, 2).expect("client"),
        &base,
        3,
    );
    let error = client
        .execute(Method::GET, &format!("{base}/api"), |request| request)
        .await
        .expect_err("always 503");
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(api_calls.load(Ordering::SeqCst), 3);
}

fn quick_client(base: &str) -> ApiClient {
    ApiClient::new(
        build_client(Duration::from_secs(5), None, 2).expect("client"),
        cache(base, Duration::from_secs(300)),
        Pacer::new(2),
        RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_secs(5),
        },
    )
}

#[tokio::test]
async fn only_refused_requests_are_not_resent_after_an_unexplained_failure() {
    use std::sync::atomic::Ordering;
    let (base, _, api_calls) = fake_service(3599, 503).await;
    let error = quick_client(&base)
        .execute_with(
            Method::GET,
            &format!("{base}/api"),
            Resend::OnlyRefused,
            |r| r,
        )
        .await
        .expect_err("503 without Retry-After");
    assert!(error.is_transient(), "{error:?}");
    assert_eq!(api_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_retry_after_beyond_max_delay_is_handed_back_when_asked() {
    use std::sync::atomic::Ordering;
    let (base, _, api_calls) = fake_service(3599, 429).await;
    let error = quick_client(&base)
        .handing_back_long_waits()
        .execute(Method::GET, &format!("{base}/api"), |request| request)
        .await
        .expect_err("always 429");
    let ConnectorError::Transient { retry_after, .. } = error else {
        panic!("expected a transient error, got {error:?}");
    };
    assert_eq!(retry_after, Some(Duration::from_secs(120)));
    assert_eq!(api_calls.load(Ordering::SeqCst), 1);
}

/// Serves `answer` as every token response; the base URL.
async fn token_endpoint(answer: serde_json::Value) -> String {
    let router = axum::Router::new().route(
        "/token",
        axum::routing::post(move || {
            let answer = answer.clone();
            async move { axum::Json(answer) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    base
}

#[tokio::test]
async fn a_token_that_is_not_a_bearer_token_is_an_auth_error() {
    let base = token_endpoint(serde_json::json!({
        "token_type": "mac", "expires_in": 3599, "access_token": "t"
    }))
    .await;
    let error = cache(&base, Duration::from_secs(300))
        .token()
        .await
        .expect_err("a mac token cannot be sent as bearer");
    assert!(matches!(error, ConnectorError::Auth { .. }), "{error:?}");
    assert!(error.to_string().contains("\"mac\""), "{error}");
}

#[tokio::test]
async fn a_token_no_header_can_carry_is_an_auth_error_that_does_not_print_it() {
    let base = token_endpoint(serde_json::json!({
        "token_type": "Bearer", "expires_in": 3599, "access_token": "secret\r\nX-Injected: 1"
    }))
    .await;
    let error = cache(&base, Duration::from_secs(300))
        .token()
        .await
        .expect_err("a token with a line break cannot be sent");
    assert!(matches!(error, ConnectorError::Auth { .. }), "{error:?}");
    assert!(error.to_string().contains("control characters"), "{error}");
    assert!(!error.to_string().contains("secret"), "{error}");
}

#[test]
fn campaign_error_code_is_kept_beside_its_message() {
    assert_eq!(
        service_error_message(br#"{"error_code":"401013","message":"Oauth token is not valid"}"#),
        "Oauth token is not valid (error_code 401013)"
    );
    assert_eq!(
        service_error_message(br#"{"code":400,"message":"RST-360011 bad"}"#),
        "RST-360011 bad"
    );
}

#[test]
fn invalid_extra_ca_is_a_clear_error() {
    let error = build_client(Duration::from_secs(5), Some(b"not a certificate"), 1)
        .expect_err("garbage is not a CA");
    assert!(
        error.to_string().contains("extra CA certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn a_redirect_is_an_error_and_the_token_never_follows_it() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    // Where a redirect would lead: it must never be called (it would receive the token).
    let elsewhere_calls = Arc::new(AtomicU32::new(0));
    let counted = Arc::clone(&elsewhere_calls);
    let elsewhere = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::SeqCst);
        async { "{}" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let target = format!("http://{}/steal", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, elsewhere).await;
    });
    let (base, _, _) = fake_service(3599, 200).await;
    let redirecting = axum::Router::new().route(
        "/api",
        axum::routing::get(move || {
            let target = target.clone();
            async move { (StatusCode::FOUND, [(reqwest::header::LOCATION, target)], "") }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}/api", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, redirecting).await;
    });
    // Both ways out: the direct path, and reqwest's (taken when a proxy is configured).
    for direct in [true, false] {
        let http = build_client(Duration::from_secs(5), None, 2).expect("client");
        let client = ApiClient::new(
            if direct { http } else { http.through_reqwest() },
            cache(&base, Duration::from_secs(300)),
            Pacer::new(2),
            RetryPolicy::default(),
        );
        let answer = client
            .execute(Method::GET, &api, |request| request)
            .await
            .expect("the 302 itself is the answer");
        assert_eq!(answer.status, StatusCode::FOUND);
        assert!(answer.into_success("GET /api").is_err());
        assert_eq!(elsewhere_calls.load(Ordering::SeqCst), 0);
    }
}

/// A working token endpoint and a raw HTTP/1 `/api`: for each connection, the request is read
/// (up to 4 KiB) and `answer` writes what it likes; returns the token base and API address.
async fn raw_service<F, Fut>(answer: F) -> (String, String)
where
    F: Fn(tokio::net::TcpStream) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    use tokio::io::AsyncReadExt;
    let (base, _, _) = fake_service(3599, 200).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let api = format!("http://{}/api", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answer.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                answer(socket).await;
            });
        }
    });
    (base, api)
}

/// A service whose `/api` never finishes its answer (status line and headers at once when
/// `headers_first`, the body never finishing), with a working token endpoint.
async fn stalling_service(headers_first: bool) -> String {
    use tokio::io::AsyncWriteExt;
    let (base, api) = raw_service(move |mut socket| async move {
        if headers_first {
            let _ = socket
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{\"a\":")
                .await;
        }
        tokio::time::sleep(Duration::from_secs(60)).await;
    })
    .await;
    format!("{base} {api}")
}

#[tokio::test]
async fn a_request_without_a_whole_answer_in_time_is_transient_and_says_so() {
    for (headers_first, direct) in [(false, true), (true, true), (false, false), (true, false)] {
        let both = stalling_service(headers_first).await;
        let (base, api) = both.split_once(' ').expect("two addresses");
        let http = build_client(Duration::from_millis(300), None, 2).expect("client");
        let client = api_over(if direct { http } else { http.through_reqwest() }, base, 1);
        let started = Instant::now();
        let error = client
            .execute(Method::GET, api, |request| request)
            .await
            .expect_err("no whole answer");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the timeout ended the call"
        );
        let ConnectorError::Transient { message, .. } = &error else {
            panic!("a timeout is transient: {error:?}");
        };
        assert!(message.contains(&format!("GET {api}")), "{message}");
        if direct && client_is_direct() {
            assert!(
                message.contains("no complete response within 300ms"),
                "{message}"
            );
        }
    }
}

#[tokio::test]
async fn a_refused_connection_is_transient_and_names_the_call() {
    let (base, _, _) = fake_service(3599, 200).await;
    // A port that was free a moment ago: nothing listens there now.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr")
    };
    let api = format!("http://{closed}/api");
    let error = quick_client(&base)
        .execute(Method::GET, &api, |request| request)
        .await
        .expect_err("nothing listens");
    let ConnectorError::Transient { message, .. } = &error else {
        panic!("a refused connection is transient: {error:?}");
    };
    assert!(message.contains(&format!("GET {api} failed")), "{message}");
}

/// Whether this process's clients take the direct path (no proxy in the environment).
fn client_is_direct() -> bool {
    build_client(Duration::from_secs(1), None, 1)
        .expect("client")
        .is_direct()
}

/// A service answering every request with a body of `length` bytes, announced with
/// `Content-Length` or sent chunked; returns its token base and API address.
async fn sized_service(length: usize, announced: bool) -> (String, String) {
    use tokio::io::AsyncWriteExt;
    raw_service(move |mut socket| async move {
        let body = vec![b'x'; length];
        let answer = if announced {
            let mut answer =
                format!("HTTP/1.1 200 OK\r\ncontent-length: {length}\r\n\r\n").into_bytes();
            answer.extend_from_slice(&body);
            answer
        } else {
            // Chunks of 64 KiB, as a service streaming a page would send them.
            let mut answer = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
            for chunk in body.chunks(64 << 10) {
                answer.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                answer.extend_from_slice(chunk);
                answer.extend_from_slice(b"\r\n");
            }
            answer.extend_from_slice(b"0\r\n\r\n");
            answer
        };
        let _ = socket.write_all(&answer).await;
        let _ = socket.shutdown().await;
    })
    .await
}

#[tokio::test]
async fn a_response_longer_than_the_limit_is_refused_naming_the_limit_on_both_paths() {
    const LIMIT: usize = 1 << 20;
    for direct in [true, false] {
        for announced in [true, false] {
            for (length, fits) in [(LIMIT, true), (LIMIT + 1, false), (3 * LIMIT, false)] {
                let (base, api) = sized_service(length, announced).await;
                let http = build_client(Duration::from_secs(10), None, 2)
                    .expect("client")
                    .with_body_limit(LIMIT);
                let client = api_over(if direct { http } else { http.through_reqwest() }, &base, 3);
                let case = format!("direct {direct}, announced {announced}, {length} bytes");
                let result = client.execute(Method::GET, &api, |request| request).await;
                if fits {
                    let response = result.unwrap_or_else(|error| panic!("{case}: {error:?}"));
                    assert_eq!(response.body.len(), length, "{case}");
                    continue;
                }
                let Err(ConnectorError::Permanent { message }) = result else {
                    panic!("{case}: a body over the limit is a permanent error: {result:?}");
                };
                assert!(
                    message.contains(&format!("GET {api} failed")),
                    "{case}: {message}"
                );
                assert!(message.contains("longer than 1 MiB"), "{case}: {message}");
            }
        }
    }
}
