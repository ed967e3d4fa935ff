//! The broker a test runs on, with the pipeline's topics already made.
//!
//! - [`BrokerKind::Embedded`]: librdkafka's mock cluster in this process. Fast, and the only
//!   one that can fail individual requests on cue; but it keeps ~5 MiB per partition, has no
//!   offsets-for-times, no DescribeConfigs, no log cleaner, and a simplified group coordinator.
//! - [`BrokerKind::Kafka`]: one Apache Kafka KRaft node (`scripts/kafka.py`), replication 1.
//! - [`BrokerKind::KafkaCluster`]: three nodes, replication factor 3, `min.insync.replicas=2`:
//!   what production runs; [`Broker::kafka`] gives the handle to kill, pause and restart nodes.
//!
//! On Apache Kafka the topics are created by `service_runtime::topics::ensure`, the code behind
//! `tierflow topics ensure`, so every test also checks the production layout (a compacted
//! changelog co-partitioned with the orders). `TIERFLOW_TEST_BROKER` (`embedded`, `kafka`,
//! `kafka-cluster`) chooses for the tests written to run on any broker ([`Broker::from_env`]).

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::ClientConfig;
use service_runtime::config::TopicsConfig;
use service_runtime::kafka::{EmbeddedBroker, LocalKafka};
use service_runtime::topics::{self, Layout};

/// Which broker; see the module doc.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    Embedded,
    Kafka,
    KafkaCluster,
}

impl BrokerKind {
    /// The variable [`BrokerKind::from_env`] reads.
    pub const ENV: &'static str = "TIERFLOW_TEST_BROKER";

    /// `TIERFLOW_TEST_BROKER`: unset or `embedded`, `kafka`, `kafka-cluster`.
    pub fn from_env() -> BrokerKind {
        match std::env::var(Self::ENV).as_deref() {
            Err(_) | Ok("") | Ok("embedded") => BrokerKind::Embedded,
            Ok("kafka") => BrokerKind::Kafka,
            Ok("kafka-cluster") => BrokerKind::KafkaCluster,
            Ok(other) => panic!(
                "{}={other:?}: use `embedded`, `kafka` or `kafka-cluster`",
                Self::ENV
            ),
        }
    }

    pub fn is_apache_kafka(self) -> bool {
        self != BrokerKind::Embedded
    }
}

enum Running {
    Embedded(EmbeddedBroker),
    Kafka(LocalKafka),
}

/// A running broker with every pipeline topic (default names) made. Stopped on drop; an
/// Apache Kafka's logs and data are kept when the test panicked.
pub struct Broker {
    kind: BrokerKind,
    bootstrap: String,
    running: Running,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} broker at {}", self.kind, self.bootstrap)
    }
}

impl Broker {
    /// The broker `TIERFLOW_TEST_BROKER` selects, each pipeline topic with `partitions`.
    pub fn from_env(partitions: i32) -> Broker {
        Broker::start(BrokerKind::from_env(), partitions)
    }

    /// The mock cluster, each pipeline topic with `partitions`.
    pub fn embedded(partitions: i32) -> Broker {
        Broker::start(BrokerKind::Embedded, partitions)
    }

    /// Apache Kafka with `nodes` nodes (1 or 3), each pipeline topic with `partitions`.
    pub fn kafka(nodes: u8, partitions: i32) -> Broker {
        match nodes {
            1 => Broker::start(BrokerKind::Kafka, partitions),
            3 => Broker::start(BrokerKind::KafkaCluster, partitions),
            n => panic!("scripts/kafka.py starts 1 or 3 nodes, not {n}"),
        }
    }

    /// Apache Kafka with `nodes` nodes and no topics, for a test that makes its own (odd
    /// limits, drift) before the pipeline's.
    pub fn kafka_without_topics(nodes: u8) -> Broker {
        crate::log::init();
        let k = LocalKafka::start(nodes)
            .expect("Apache Kafka starts (scripts/install-test-deps.sh installs Java and Maven)");
        Broker {
            kind: if nodes == 1 {
                BrokerKind::Kafka
            } else {
                BrokerKind::KafkaCluster
            },
            bootstrap: k.bootstrap.clone(),
            running: Running::Kafka(k),
        }
    }

    pub fn start(kind: BrokerKind, partitions: i32) -> Broker {
        crate::log::init();
        let topics = TopicsConfig::default();
        let (bootstrap, running) = match kind {
            BrokerKind::Embedded => {
                let b = EmbeddedBroker::start_pipeline(&topics, partitions)
                    .expect("the mock cluster starts");
                (b.bootstrap_servers(), Running::Embedded(b))
            }
            BrokerKind::Kafka | BrokerKind::KafkaCluster => {
                let nodes = if kind == BrokerKind::Kafka { 1 } else { 3 };
                let k = LocalKafka::start(nodes).expect(
                    "Apache Kafka starts (scripts/install-test-deps.sh installs Java and Maven)",
                );
                ensure_topics(&k.bootstrap, &topics, layout(nodes, partitions));
                (k.bootstrap.clone(), Running::Kafka(k))
            }
        };
        Broker {
            kind,
            bootstrap,
            running,
        }
    }

    pub fn kind(&self) -> BrokerKind {
        self.kind
    }

    pub fn bootstrap_servers(&self) -> String {
        self.bootstrap.clone()
    }

    /// A bare client config for this broker (admin, test producers and readers).
    pub fn client(&self) -> ClientConfig {
        client(&self.bootstrap)
    }

    /// The mock cluster, for request-level fault injection. Panics on Apache Kafka: a test
    /// that needs it must ask for [`Broker::embedded`].
    pub fn mock(&self) -> &MockCluster<'static, DefaultProducerContext> {
        match &self.running {
            Running::Embedded(b) => b.cluster(),
            Running::Kafka(_) => panic!("fault injection by request needs the mock cluster"),
        }
    }

    /// The Apache Kafka processes (to kill, pause or restart a node), if this is one.
    pub fn apache_kafka(&self) -> Option<&LocalKafka> {
        match &self.running {
            Running::Kafka(k) => Some(k),
            Running::Embedded(_) => None,
        }
    }
}

impl Broker {
    /// The node id leading `topic`'s `partition` now, as the cluster's metadata says.
    pub fn leader_of(&self, topic: &str, partition: i32) -> i32 {
        use rdkafka::consumer::{BaseConsumer, Consumer};
        let consumer: BaseConsumer = self.client().create().expect("a metadata client");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .expect("metadata");
        md.topics()[0]
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .expect("the partition exists")
    }
}

/// A bare client config for `bootstrap`.
pub fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap);
    c
}

/// Create one topic (replication 1) with `configs`, before the pipeline's own, for tests that
/// need odd limits or drift; panics if the broker refuses.
pub async fn create_topic(bootstrap: &str, name: &str, partitions: i32, configs: &[(&str, &str)]) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        client(bootstrap).create().expect("an admin client");
    let mut topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
    for (k, v) in configs {
        topic = topic.set(k, v);
    }
    for r in admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .expect("CreateTopics answered")
    {
        r.unwrap_or_else(|(t, e)| panic!("creating {t}: {e}"));
    }
    // CreateTopics answers once the controller has the topic; a broker's metadata shows it a
    // little later. A test goes on only when every partition has a leader.
    let started = std::time::Instant::now();
    loop {
        let metadata = admin
            .inner()
            .fetch_metadata(Some(name), Duration::from_secs(5));
        let ready = metadata.is_ok_and(|m| {
            m.topics().iter().any(|t| {
                t.name() == name
                    && t.error().is_none()
                    && t.partitions().len() == partitions as usize
                    && t.partitions().iter().all(|p| p.leader() >= 0)
            })
        });
        if ready {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "topic {name} created but not in the metadata after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// [`ensure_topics`] with the default names and [`layout`], off the async runtime's threads.
pub async fn ensure_pipeline_topics(bootstrap: &str, nodes: u8, partitions: i32) {
    let b = bootstrap.to_owned();
    tokio::task::spawn_blocking(move || {
        ensure_topics(&b, &TopicsConfig::default(), layout(nodes, partitions))
    })
    .await
    .expect("ensuring the topics");
}

/// The production layout on `nodes` nodes: replication factor = nodes, and
/// `min.insync.replicas` 2 when there are replicas to spare.
pub fn layout(nodes: u8, partitions: i32) -> Layout {
    Layout {
        partitions,
        replication: i32::from(nodes),
        min_insync_replicas: if nodes == 1 { 1 } else { 2 },
    }
}

/// Create (or verify) every pipeline topic in `layout` through the Admin API, as `tierflow
/// topics ensure --execute` does; panics on drift it cannot fix.
pub fn ensure_topics(bootstrap: &str, topics: &TopicsConfig, layout: Layout) {
    let specs = topics::pipeline_topics(topics, layout);
    let findings = topics::ensure(&client(bootstrap), &specs, true, Duration::from_secs(60))
        .expect("the pipeline topics can be made");
    let drift: Vec<_> = findings
        .iter()
        .filter(|f| matches!(f, topics::Finding::Drift { .. }))
        .collect();
    assert!(drift.is_empty(), "topic drift: {drift:?}");
}
