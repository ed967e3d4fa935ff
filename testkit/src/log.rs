//! Test output: quiet unless asked.
//!
//! `TEST_LOG=<filter>` (an `EnvFilter`, e.g. `info` or `segmenter=debug,rdkafka=info`; `1`
//! means `info`) shows the logs of services running inside the test process, through libtest's
//! capture: a failing test prints its own, `-- --nocapture` prints all. Without it they are
//! dropped. Service processes ([`crate::process`]) always log to their own files; their filter
//! is `TIERFLOW_TEST_SERVICE_LOG`, else `TEST_LOG`, else assignments and warnings.

use std::sync::Once;

/// The variable that switches in-process logs on.
pub const TEST_LOG: &str = "TEST_LOG";

/// Install the test subscriber if `TEST_LOG` asks for one (once per process; a subscriber
/// the test installed itself is left alone). The harness calls this when a test starts a
/// broker or a service.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let Some(filter) = filter() else { return };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    });
}

/// `TEST_LOG`'s filter, if it asks for logs.
pub fn filter() -> Option<String> {
    match std::env::var(TEST_LOG).ok()?.trim() {
        "" | "0" => None,
        "1" => Some("info".into()),
        f => Some(f.to_owned()),
    }
}
