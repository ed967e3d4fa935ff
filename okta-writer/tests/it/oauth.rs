//! OAuth 2.0 service-app authentication (`private_key_jwt` client credentials) against the
//! simulator's token endpoint, which verifies the signed assertion with the app's public key.

use std::path::PathBuf;
use std::time::Duration;

use crate::common::*;
use okta_sim::{OAuthClient, SimConfig};
use okta_writer::apply::{ApplyError, Trust};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

async fn oauth_sim(token_lifetime: Duration) -> okta_sim::SimHandle {
    sim(
        SimConfig {
            api_tokens: Vec::new(),
            oauth_clients: vec![OAuthClient {
                client_id: "0oatierflowtest".into(),
                public_key_pem: std::fs::read_to_string(fixture("test-service-app.pub.pem"))
                    .unwrap(),
            }],
            token_lifetime,
            ..SimConfig::default()
        },
        3,
    )
    .await
}

fn oauth_settings(okta: &str, key: &str) -> okta_writer::config::Settings {
    let mut s = settings("127.0.0.1:1", okta, "w-oauth");
    s.okta.api_token = None;
    s.okta.oauth_client_id = Some("0oatierflowtest".into());
    s.okta.oauth_private_key_file = Some(fixture(key));
    s.okta.oauth_key_id = Some("test-kid".into());
    s.validate().unwrap();
    s
}

fn token_requests(sim: &okta_sim::SimHandle) -> usize {
    sim.shared
        .requests()
        .iter()
        .filter(|r| r.operation == "token")
        .count()
}

#[tokio::test]
async fn a_service_app_gets_a_token_once_and_refreshes_it_before_expiry() {
    let sim = oauth_sim(Duration::from_secs(2)).await;
    let s = oauth_settings(&sim.base_url(), "test-service-app.key.pem");
    let applier = okta_writer::applier(&s, okta_writer::metrics::Metrics::unregistered())
        .await
        .unwrap();
    for c in 0..3 {
        let u = update(c, 30_000, 2, Some("Potential"));
        applier.apply(&u, &[], Trust::Cached).await.unwrap();
        assert!(okta_matches(&sim, &u));
    }
    assert_eq!(token_requests(&sim), 1, "one token serves many calls");
    // Past 50% of a 2 s lifetime the token is refreshed before use, never sent expired.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    applier
        .apply(&update(0, 40_000, 3, Some("Active")), &[], Trust::Cached)
        .await
        .unwrap();
    assert_eq!(token_requests(&sim), 2);
    assert!(sim.shared.requests().iter().all(|r| r.status != 401));
}

#[tokio::test]
async fn an_assertion_signed_with_an_unknown_key_is_a_credentials_failure() {
    let sim = oauth_sim(Duration::from_secs(3600)).await;
    let s = oauth_settings(&sim.base_url(), "other.key.pem");
    let err = okta_writer::applier(&s, okta_writer::metrics::Metrics::unregistered())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("invalid_client"), "{err:#}");
    // Through the applier the same failure is systemic (pause), never a dead letter.
    let good = okta_writer::applier(
        &oauth_settings(&sim.base_url(), "test-service-app.key.pem"),
        okta_writer::metrics::Metrics::unregistered(),
    )
    .await
    .unwrap();
    let bad_client = okta_writer::client::OktaClient::new(
        sim.base_url(),
        s.credentials().unwrap(),
        &s.okta,
        okta_writer::metrics::Metrics::unregistered(),
    )
    .unwrap();
    let applier = okta_writer::apply::Applier::new(
        bad_client,
        good.stores.clone(),
        &s.okta,
        okta_writer::metrics::Metrics::unregistered(),
    );
    let e = applier
        .apply(&update(0, 100, 1, None), &[], Trust::Cached)
        .await;
    assert!(matches!(e, Err(ApplyError::Credentials(_))), "{e:?}");
}
