//! Plumbing every tierflow service shares, and nothing else: configuration loading
//! ([`config`]), logs and traces ([`telemetry`]), the admin listener with `/metrics`
//! ([`admin`]), Kafka client settings and the embedded dev broker ([`kafka`]), and the shutdown
//! signal ([`shutdown`]). Service logic lives in the service crates.

pub mod admin;
pub mod config;
pub mod kafka;
pub mod shutdown;
pub mod telemetry;
