//! The broker an end-to-end test runs on: the in-process librdkafka mock cluster by default, or
//! a real Tansu process (sqlite storage) when `TIERFLOW_E2E_BROKER=tansu`, so the same suite
//! checks the pipeline against a standalone Kafka-compatible broker (scripts/test.sh runs both).
//!
//! Tansu does not auto-create topics: every pipeline topic is created up front with the
//! `tansu topic create` CLI. Its binary comes from `TANSU_BIN` or scripts/install-tansu.sh
//! (which builds it once per machine and caches it).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use service_runtime::config::TopicsConfig;
use service_runtime::kafka::EmbeddedBroker;

/// Which broker `TIERFLOW_E2E_BROKER` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Embedded,
    Tansu,
}

impl Kind {
    pub fn from_env() -> Kind {
        match std::env::var("TIERFLOW_E2E_BROKER").as_deref() {
            Err(_) | Ok("") | Ok("embedded") => Kind::Embedded,
            Ok("tansu") => Kind::Tansu,
            Ok(other) => panic!("TIERFLOW_E2E_BROKER={other:?}: use `embedded` or `tansu`"),
        }
    }
}

pub enum TestBroker {
    Embedded(EmbeddedBroker),
    Tansu(Tansu),
}

impl TestBroker {
    /// The broker `TIERFLOW_E2E_BROKER` selects, with every pipeline topic created with
    /// `partitions` partitions.
    pub fn start(partitions: i32) -> TestBroker {
        match Kind::from_env() {
            Kind::Embedded => TestBroker::Embedded(
                EmbeddedBroker::start_pipeline(&TopicsConfig::default(), partitions)
                    .expect("the embedded broker starts"),
            ),
            Kind::Tansu => TestBroker::Tansu(Tansu::start(partitions)),
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            TestBroker::Embedded(_) => Kind::Embedded,
            TestBroker::Tansu(_) => Kind::Tansu,
        }
    }

    pub fn bootstrap_servers(&self) -> String {
        match self {
            TestBroker::Embedded(b) => b.bootstrap_servers(),
            TestBroker::Tansu(t) => t.addr.to_string(),
        }
    }
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:?} broker at {}",
            self.kind(),
            self.bootstrap_servers()
        )
    }
}

/// A Tansu broker process on a loopback port with its sqlite file in a fresh directory.
#[derive(Debug)]
pub struct Tansu {
    binary: PathBuf,
    dir: PathBuf,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Tansu {
    /// Start Tansu and create the pipeline's topics (the changelog compacted).
    pub fn start(partitions: i32) -> Tansu {
        let binary = tansu_binary().to_owned();
        let dir = std::env::temp_dir().join(format!(
            "tierflow-e2e-tansu-{}-{}",
            std::process::id(),
            unique()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let addr = free_port();
        let mut tansu = Tansu {
            binary,
            dir,
            addr,
            child: None,
        };
        tansu.spawn();
        let topics = TopicsConfig::default();
        for (name, compact) in [
            (&topics.orders, false),
            (&topics.orders_quarantine, false),
            (&topics.segments, false),
            (&topics.okta_dlq, false),
            (&topics.ledger_changelog, true),
        ] {
            tansu.create_topic(name, partitions, compact);
        }
        tansu
    }

    fn url(&self) -> String {
        format!("tcp://{}", self.addr)
    }

    /// Start the broker process and wait until it accepts connections.
    fn spawn(&mut self) {
        assert!(self.child.is_none(), "tansu is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("tansu.log"))
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("broker")
            .args(["--listener-url", &self.url()])
            .args(["--advertised-listener-url", &self.url()])
            // Tansu reads `sqlite://PATH` relative to its working directory, even `///abs`.
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(&self.dir)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", self.binary.display()));
        self.child = Some(child);
        let started = Instant::now();
        while TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "tansu exited with {status} at start; its log: {}",
                    self.dir.join("tansu.log").display()
                );
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "tansu did not listen on {} within 30 s",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as at the end of a test.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn create_topic(&self, name: &str, partitions: i32, compact: bool) {
        let mut cmd = Command::new(&self.binary);
        cmd.args(["topic", "create", name])
            .args(["--partitions", &partitions.to_string()])
            .args(["--broker", &self.url()]);
        if compact {
            cmd.args(["--config", "cleanup.policy=compact"]);
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "tansu topic create {name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "keeping Tansu's log and data for the failed test: {}",
                self.dir.display()
            );
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The Tansu binary: `TANSU_BIN`, or the one scripts/install-tansu.sh caches (building it on
/// first use, ~10–15 min).
fn tansu_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/install-tansu.sh");
        let out = Command::new(&script)
            .stderr(Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed: Tansu is needed when TIERFLOW_E2E_BROKER=tansu",
            script.display()
        );
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A loopback port nobody listens on now (the kernel's pick for port 0, released).
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn unique() -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}
