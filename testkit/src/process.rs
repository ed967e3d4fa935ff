//! The pipeline as separate processes: the `ingest`, `segmenter` and `okta-writer` binaries,
//! started with config/dev.toml on a given broker and Okta, so a test can `kill -9` any of them
//! and start it again.
//!
//! The binaries are the ones in the target directory this test runs from (scripts/test.sh
//! builds them first with `cargo build --workspace --bins`); `TIERFLOW_BIN_DIR` points
//! elsewhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Ingest,
    Segmenter,
    OktaWriter,
}

impl Service {
    pub const ALL: [Service; 3] = [Service::Ingest, Service::Segmenter, Service::OktaWriter];

    pub fn binary_name(self) -> &'static str {
        match self {
            Service::Ingest => "ingest",
            Service::Segmenter => "segmenter",
            Service::OktaWriter => "okta-writer",
        }
    }
}

/// Where the services' binaries are: `TIERFLOW_BIN_DIR`, else the profile directory of the
/// running test executable (`target/debug/deps/<test>` → `target/debug`).
pub fn binary(service: Service) -> PathBuf {
    let dir = match std::env::var_os("TIERFLOW_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().to_owned()
        }
    };
    let path = dir.join(service.binary_name());
    assert!(
        path.exists(),
        "{} not found: build the services first (`cargo build --workspace --bins`, which scripts/test.sh does) or set TIERFLOW_BIN_DIR",
        path.display()
    );
    path
}

/// What the processes share: the broker, the Okta simulator, the ingest's fixed address (so
/// a restarted ingest is found where Shopify sends), and a directory for their logs.
#[derive(Debug, Clone)]
pub struct Wiring {
    pub bootstrap: String,
    pub okta_base_url: String,
    pub webhooks: SocketAddr,
    pub log_dir: PathBuf,
    /// The shop whose webhooks the test sends: the Okta writer's one store.
    pub shop: String,
}

/// One service's process, restartable.
#[derive(Debug)]
pub struct Process {
    pub service: Service,
    /// Tells apart two processes of one service (their log files): `ingest-0.log`, ...
    pub instance: u32,
    wiring: Wiring,
    child: Option<Child>,
    pub starts: u32,
}

impl Process {
    pub fn start(service: Service, wiring: &Wiring) -> Process {
        Process::start_instance(service, wiring, 0)
    }

    /// Another process of `service` (same group, same config): consumers share the work.
    pub fn start_instance(service: Service, wiring: &Wiring, instance: u32) -> Process {
        let mut p = Process {
            service,
            instance,
            wiring: wiring.clone(),
            child: None,
            starts: 0,
        };
        p.spawn();
        p
    }

    /// This process's log file (stderr, appended across restarts).
    pub fn log(&self) -> PathBuf {
        self.wiring.log_dir.join(format!(
            "{}-{}.log",
            self.service.binary_name(),
            self.instance
        ))
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "{:?} is running", self.service);
        let w = &self.wiring;
        let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/dev.toml");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log())
            .unwrap();
        let mut cmd = Command::new(binary(self.service));
        cmd.arg("--config")
            .arg(config)
            .args(["--brokers", &w.bootstrap])
            // A killed member's partitions move after its session times out: keep it short.
            .env("TIERFLOW_KAFKA__CLIENT__SESSION_TIMEOUT_MS", "6000")
            // Assignments and revocations are what a failure usually needs explained;
            // `TIERFLOW_TEST_SERVICE_LOG` overrides (e.g. add librdkafka's `debug` via env),
            // then `TEST_LOG` (crate::log).
            .env(
                "RUST_LOG",
                std::env::var("TIERFLOW_TEST_SERVICE_LOG")
                    .ok()
                    .or_else(crate::log::filter)
                    .unwrap_or_else(|| "warn,service_runtime::kafka=info".into()),
            )
            .stdout(Stdio::null())
            .stderr(log);
        match self.service {
            Service::Ingest => cmd
                .env("TIERFLOW_INGEST__LISTEN", w.webhooks.to_string())
                .env("TIERFLOW_INGEST__ADMIN_LISTEN", "127.0.0.1:0"),
            Service::Segmenter => cmd.env("TIERFLOW_SEGMENTER__ADMIN_LISTEN", "127.0.0.1:0"),
            Service::OktaWriter => cmd
                .env("TIERFLOW_OKTA__BASE_URL", &w.okta_base_url)
                .env("TIERFLOW_OKTA__STORES", &w.shop)
                .env("TIERFLOW_OKTA__RETRY_INITIAL_INTERVAL", "20ms")
                .env("TIERFLOW_OKTA__RETRY_MAX_INTERVAL", "500ms")
                .env("TIERFLOW_OKTA_WRITER__ADMIN_LISTEN", "127.0.0.1:0"),
        };
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.service)),
        );
        self.starts += 1;
    }

    /// SIGKILL, no shutdown hooks: whatever was in flight is cut off.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics if the process exited on its own (a crash, or a refusal to start).
    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "{:?} exited by itself with {status}; see {}",
                    self.service,
                    self.log().display()
                );
            }
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}
