//! The Okta writer's tests, one binary (each test binary links librdkafka; one per crate
//! keeps the build short): the consumer loop on the mock cluster and the Okta simulator, the
//! contract with Okta's OpenAPI spec, OAuth, odd answers, and the binary killed mid-stream.

mod common;
mod contract;
mod crash;
mod oauth;
mod odd_answers;
mod reconcile;
mod rules;
mod writer;
