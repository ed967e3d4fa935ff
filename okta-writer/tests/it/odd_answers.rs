//! Answers Okta does not document but a proxy, a broken deployment or an attacker on the path
//! can produce. None may stall the writer or pass for a success: a `Link: rel="next"` that
//! points at the page just read, a `200` without the user's `id`, a list that is not a list,
//! and a redirect to another host (which must never see the credentials).
//!
//! These are not the simulator's job (it follows Okta's documented behaviour): a few routes
//! of a hostile server here answer exactly the odd thing under test.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use okta_writer::client::{ErrorClass, OktaClient, OktaErrorKind, Operation};
use okta_writer::config::{Credentials, OktaConfig};
use okta_writer::metrics::Metrics;
use reqwest::Method;
use secrecy::SecretString;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn client(base: &str) -> OktaClient {
    let okta = OktaConfig {
        retry_initial_interval: Duration::from_millis(10),
        retry_max_interval: Duration::from_millis(50),
        retry_max_elapsed: Duration::from_millis(400),
        ..OktaConfig::default()
    };
    OktaClient::new(
        base.to_owned(),
        Credentials::ApiToken(SecretString::from("odd-token")),
        &okta,
        Metrics::unregistered(),
    )
    .unwrap()
}

#[tokio::test]
async fn odd_answers_are_failures_never_successes_or_endless_loops() {
    let evil_hits = Arc::new(AtomicUsize::new(0));
    let hits = evil_hits.clone();
    let evil = serve(Router::new().fallback(move |headers: HeaderMap| {
        let hits = hits.clone();
        async move {
            hits.fetch_add(1, Ordering::Relaxed);
            assert!(
                headers.get(header::AUTHORIZATION).is_none(),
                "credentials followed a redirect off the org"
            );
            axum::Json(serde_json::json!([{"id": "00uEVIL"}]))
        }
    }))
    .await;

    let self_link_hits = Arc::new(AtomicUsize::new(0));
    let counted = self_link_hits.clone();
    let evil_for_redirect = evil.clone();
    let router = Router::new()
        // Every page says the next page is itself.
        .route(
            "/api/v1/users",
            get(move |headers: HeaderMap| {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::Relaxed);
                    let host = headers[header::HOST].to_str().unwrap().to_owned();
                    (
                        [(
                            header::LINK,
                            format!("<http://{host}/api/v1/users?after=x>; rel=\"next\""),
                        )],
                        axum::Json(serde_json::json!([{"id": "00u1"}])),
                    )
                }
            }),
        )
        // A 200 that is not a user.
        .route(
            "/api/v1/users/no-id",
            get(|| async { axum::Json(serde_json::json!({"status": "ACTIVE"})) }),
        )
        .route(
            "/api/v1/users/bad-id",
            get(|| async { axum::Json(serde_json::json!({"id": "../../groups/x"})) }),
        )
        // A list that is an object.
        .route(
            "/api/v1/users/00u1/groups",
            get(|| async { axum::Json(serde_json::json!({"id": "00g1"})) }),
        )
        // A redirect to another host.
        .route(
            "/api/v1/groups",
            get(move || {
                let to = format!("{evil_for_redirect}/api/v1/groups");
                async move { (StatusCode::FOUND, [(header::LOCATION, to)]).into_response() }
            }),
        );
    let base = serve(router).await;
    let c = client(&base);

    let f = c
        .list_all(Operation::SearchUsers, "/api/v1/users?search=x")
        .await
        .expect_err("a self-referencing next link must fail");
    assert!(
        matches!(&f.last.kind, OktaErrorKind::InvalidResponse { detail, .. } if detail.contains("repeats")),
        "{f}"
    );
    assert!(
        self_link_hits.load(Ordering::Relaxed) <= 3,
        "followed the loop {} times",
        self_link_hits.load(Ordering::Relaxed)
    );

    for path in ["/api/v1/users/no-id", "/api/v1/users/bad-id"] {
        let f = c
            .send(Operation::GetUser, Method::GET, path, None)
            .await
            .expect_err("a user without a usable id is not a user");
        assert_eq!(f.last.status(), Some(200));
        assert!(
            matches!(f.last.kind, OktaErrorKind::InvalidResponse { .. }),
            "{f}"
        );
        assert_eq!(f.class(), ErrorClass::Transient, "retried first");
        assert!(f.exhausted && f.attempts > 1, "{f}");
    }

    let f = c
        .list_all(Operation::ListUserGroups, "/api/v1/users/00u1/groups")
        .await
        .expect_err("an object is not a list");
    assert!(
        matches!(f.last.kind, OktaErrorKind::InvalidResponse { .. }),
        "{f}"
    );

    let f = c
        .list_all(Operation::SearchGroups, "/api/v1/groups?search=x")
        .await
        .expect_err("a redirect off the org is not followed");
    assert_eq!(f.last.status(), Some(302), "{f}");
    assert_eq!(evil_hits.load(Ordering::Relaxed), 0);
}
