//! Arbitrary headers and bodies thrown at the webhook handler: it never panics and answers only
//! with documented statuses. Signed, keyable bodies really are produced (to the mock cluster).

use crate::common::*;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use proptest::prelude::*;
use tower::ServiceExt;

#[derive(Debug, Clone)]
struct Case {
    method: &'static str,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    sign: bool,
}

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ -~]{0,80}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..40),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let order = loadgen::payload::order_body(
        &loadgen::payload::OrderSpec::random(&mut rand::rng(), 820_982_911_946_154_508, Some(42)),
        SHOP,
    );
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..512),
        Just(order.clone()),
        (0..order.len()).prop_map(move |cut| order[..cut].to_vec()),
        r#"\{"id":-?[0-9]{1,22}(\.[0-9])?,"customer":(null|\{"id":"?[0-9]{0,21}"?\}|\[\]|1)\}"#
            .prop_map(String::into_bytes),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    // Mostly well-formed values, so the deeper paths (signature, key, produce) are reached.
    let topic = prop_oneof![
        2 => Just(b"orders/create".to_vec()),
        1 => Just(b"refunds/create".to_vec()),
        1 => Just(b"customers/redact".to_vec()),
        1 => Just(b"shop/redact".to_vec()),
        1 => header_value(),
    ];
    let shop = prop_oneof![4 => Just(SHOP.as_bytes().to_vec()), 1 => header_value()];
    let plain =
        || prop_oneof![4 => "[a-z0-9-]{1,36}".prop_map(String::into_bytes), 1 => header_value()];
    let optional = |name: &'static str, p: f64, v: BoxedStrategy<Vec<u8>>| {
        proptest::option::weighted(p, v).prop_map(move |v| v.map(|v| (name.to_owned(), v)))
    };
    (
        prop_oneof![4 => Just("POST"), 1 => Just("GET"), 1 => Just("PATCH")],
        optional("x-shopify-topic", 0.95, topic.boxed()),
        optional("x-shopify-shop-domain", 0.95, shop.boxed()),
        optional("x-shopify-api-version", 0.95, plain().boxed()),
        optional("x-shopify-webhook-id", 0.95, plain().boxed()),
        optional("x-shopify-event-id", 0.5, plain().boxed()),
        optional(
            "content-length",
            0.15,
            prop_oneof!["[0-9]{1,12}".prop_map(String::into_bytes), header_value()].boxed(),
        ),
        body(),
        any::<bool>(),
    )
        .prop_map(|(method, t, s, a, w, e, cl, body, sign)| Case {
            method,
            headers: [t, s, a, w, e, cl].into_iter().flatten().collect(),
            body,
            sign,
        })
}

#[test]
fn arbitrary_requests_get_only_documented_statuses() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let broker =
        service_runtime::kafka::EmbeddedBroker::start(&[ORDERS, QUARANTINE], PARTITIONS).unwrap();
    // The router is driven in-process so header bytes no HTTP client would send get through.
    let router = rt.block_on(async {
        let s = settings(&broker.bootstrap_servers());
        ingest::Application::build(&s, &broker.bootstrap_servers())
            .await
            .unwrap()
            .router()
    });
    let seen = std::cell::RefCell::new(std::collections::BTreeMap::<u16, usize>::new());
    let config = ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(c in case())| {
        let mut req = Request::builder().method(c.method).uri("/webhooks/shopify");
        for (name, value) in &c.headers {
            if let Ok(v) = axum::http::HeaderValue::from_bytes(value) {
                req = req.header(name.as_str(), v);
            }
        }
        let hmac = if c.sign { loadgen::sign(SECRET.as_bytes(), &c.body) } else { "AAAA".into() };
        req = req.header("x-shopify-hmac-sha256", hmac);
        let req = req.body(Body::from(c.body.clone())).unwrap();
        let status = rt.block_on(router.clone().oneshot(req)).unwrap().status();
        *seen.borrow_mut().entry(status.as_u16()).or_default() += 1;
        prop_assert!(
            [StatusCode::OK, StatusCode::BAD_REQUEST, StatusCode::UNAUTHORIZED,
             StatusCode::METHOD_NOT_ALLOWED, StatusCode::PAYLOAD_TOO_LARGE,
             StatusCode::SERVICE_UNAVAILABLE].contains(&status),
            "undocumented status {status} for {c:?}"
        );
        if !c.sign && c.method == "POST" {
            prop_assert_ne!(status, StatusCode::OK, "unsigned requests are never accepted");
        }
    });
    let seen = seen.into_inner();
    eprintln!("statuses: {seen:?}");
    // The generator must reach the interesting paths, or the test proves little.
    for status in [200, 400, 401, 405, 413] {
        assert!(seen.contains_key(&status), "no {status} among {seen:?}");
    }
    // The service still answers, and what it accepted really is in Kafka.
    let health = Request::get("/healthz").body(Body::empty()).unwrap();
    assert_eq!(rt.block_on(router.oneshot(health)).unwrap().status(), 200);
    assert!(
        count(&broker.bootstrap_servers(), ORDERS) + count(&broker.bootstrap_servers(), QUARANTINE)
            > 0
    );
}
