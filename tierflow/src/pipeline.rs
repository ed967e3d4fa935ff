//! The whole pipeline in one process, for local runs and end-to-end tests: the brokers (the
//! embedded mock cluster unless configured), the Okta simulator seeded with the tier groups and
//! users, the ingest, the segmenter and the Okta writer, each through its own library entry
//! point exactly as its binary runs it, plus optional `loadgen` traffic.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What `tierflow dev` starts.
#[derive(Debug, Clone)]
pub struct DevOptions {
    /// Okta users created in the simulator: loadgen's customers `customer-<id>@example.com`.
    pub users: u64,
    /// Webhooks per second from loadgen, if any.
    pub load: Option<f64>,
    /// Distinct customers loadgen's orders spread over (at most `users` have Okta users).
    pub customers: u64,
    /// Bind every listener on an ephemeral loopback port (tests run several pipelines).
    pub ephemeral_ports: bool,
    pub status_listen: SocketAddr,
    /// Lift the simulator's rate limits (default: Okta's typical per-minute buckets, so the
    /// writer's pacing is what production would see).
    pub okta_unthrottled: bool,
}

impl Default for DevOptions {
    fn default() -> Self {
        DevOptions {
            users: 1000,
            load: None,
            customers: 1000,
            ephemeral_ports: false,
            status_listen: ([127, 0, 0, 1], 8088).into(),
            okta_unthrottled: false,
        }
    }
}

/// Every service's settings, from one config file.
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    pub for_ingest: ingest::config::Settings,
    pub for_segmenter: segmenter::config::Settings,
    pub for_writer: okta_writer::config::Settings,
}

impl PipelineSettings {
    /// Load the file (and `TIERFLOW_*` env) once per service view; `brokers` overrides.
    pub fn load(
        path: Option<&Path>,
        env: Vec<(String, String)>,
        brokers: Option<String>,
    ) -> anyhow::Result<PipelineSettings> {
        Ok(PipelineSettings {
            for_ingest: ingest::config::Settings::load(path, env.clone(), brokers.clone())?,
            for_segmenter: segmenter::config::Settings::load(path, env.clone(), brokers.clone())?,
            for_writer: okta_writer::config::Settings::load(path, env, brokers)?,
        })
    }
}

/// Where everything listens.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub bootstrap: String,
    pub webhooks: SocketAddr,
    pub ingest_admin: SocketAddr,
    pub segmenter_admin: SocketAddr,
    pub writer_admin: SocketAddr,
    pub okta: String,
    pub status: Option<SocketAddr>,
}

/// A running pipeline: stop it with [`Pipeline::stop`].
#[derive(Debug)]
pub struct Pipeline {
    pub endpoints: Endpoints,
    pub sim: Arc<okta_sim::Shared>,
    stop: watch::Sender<bool>,
    tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)>,
}

fn stopped(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The simulator's seed: every store's tier groups and attributes, and `users` of loadgen's
/// customers.
pub fn seed(settings: &PipelineSettings, users: u64) -> anyhow::Result<okta_sim::Seed> {
    let mut seed = okta_sim::Seed::default();
    for store in settings.for_writer.stores()? {
        for (name, field) in store.attributes.rows() {
            let kind = match field.okta_type() {
                "number" => okta_sim::AttrType::Number,
                "integer" => okta_sim::AttrType::Integer,
                _ => okta_sim::AttrType::String,
            };
            seed.attributes.insert(name.to_owned(), kind);
        }
        for g in store.groups {
            seed.groups.push(okta_sim::SeedGroup {
                name: g.name,
                group_type: "OKTA_GROUP".into(),
                description: Some(format!("{} customers in the {} tier", store.shop, g.tier)),
            });
        }
    }
    for id in loadgen::payload::customer_ids(users) {
        let email = loadgen::payload::customer_email(id);
        let mut profile = serde_json::Map::new();
        profile.insert(
            "shopify_customer_id".into(),
            serde_json::Value::String(id.to_string()),
        );
        seed.users.push(okta_sim::SeedUser {
            login: email.clone(),
            email: Some(email),
            profile,
            ..Default::default()
        });
    }
    Ok(seed)
}

impl Pipeline {
    /// Start everything on `bootstrap` (an embedded broker is the caller's to keep alive).
    pub async fn start(
        mut settings: PipelineSettings,
        bootstrap: &str,
        options: &DevOptions,
    ) -> anyhow::Result<Pipeline> {
        let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
        if options.ephemeral_ports {
            settings.for_ingest.ingest.listen = loopback;
            settings.for_ingest.ingest.admin_listen = loopback;
            settings.for_segmenter.segmenter.admin_listen = loopback;
            settings.for_writer.okta_writer.admin_listen = loopback;
        }
        // The simulator listens where [okta] base_url points (a fresh port in tests).
        let okta_addr: SocketAddr = if options.ephemeral_ports {
            loopback
        } else {
            let url = settings.for_writer.base_url()?;
            let parsed = url::Url::parse(&url)?;
            anyhow::ensure!(
                parsed.scheme() == "http",
                "tierflow dev runs the Okta simulator: [okta] base_url must be http://127.0.0.1:PORT, not {url}"
            );
            parsed
                .socket_addrs(|| None)?
                .into_iter()
                .next()
                .context("okta.base_url has no address")?
        };
        let sim_config = if options.okta_unthrottled {
            okta_sim::SimConfig::unthrottled()
        } else {
            okta_sim::SimConfig::default()
        };
        let shared = okta_sim::Shared::new(sim_config, &seed(&settings, options.users)?)
            .map_err(anyhow::Error::msg)?;
        if let okta_writer::config::Credentials::ApiToken(t) = settings.for_writer.credentials()? {
            use secrecy::ExposeSecret;
            shared.set_api_tokens(vec![t.expose_secret().to_owned()]);
        }
        let sim_listener = tokio::net::TcpListener::bind(okta_addr)
            .await
            .with_context(|| format!("binding the Okta simulator on {okta_addr}"))?;
        let okta = format!("http://{}", sim_listener.local_addr()?);
        settings.for_writer.okta.base_url = Some(okta.clone());

        let (stop, stop_rx) = watch::channel(false);
        let mut tasks: Vec<(&'static str, JoinHandle<anyhow::Result<()>>)> = Vec::new();
        let sim_router = okta_sim::api::router(shared.clone());
        let sim_stop = stopped(&stop_rx);
        tasks.push((
            "okta-sim",
            tokio::spawn(async move {
                axum::serve(sim_listener, sim_router)
                    .with_graceful_shutdown(sim_stop)
                    .await
                    .context("okta-sim")
            }),
        ));

        let app = ingest::Application::build(&settings.for_ingest, bootstrap)
            .await
            .context("starting the ingest")?;
        let webhooks = app.local_addr();
        let ingest_admin = app.admin_addr();
        tasks.push(("ingest", tokio::spawn(app.run_until(stopped(&stop_rx)))));

        let app = segmenter::Application::build(&settings.for_segmenter, bootstrap)
            .await
            .context("starting the segmenter")?;
        let segmenter_admin = app.admin_addr();
        tasks.push(("segmenter", tokio::spawn(app.run_until(stopped(&stop_rx)))));

        let app = okta_writer::Application::build(&settings.for_writer, bootstrap)
            .await
            .context("starting the okta-writer")?;
        let writer_admin = app.admin_addr();
        tasks.push((
            "okta-writer",
            tokio::spawn(app.run_until(stopped(&stop_rx))),
        ));

        if let Some(rate) = options.load {
            // Sign as a shop the ingest accepts: with a global secret (inline or from
            // `webhook_secrets_file`) as the dev shop, else as the first shop with its own.
            let secrets = settings.for_ingest.secrets()?;
            let (shop, secret) = secrets
                .global
                .first()
                .map(|s| ("tierflow-dev.myshopify.com".to_owned(), s))
                .or_else(|| {
                    secrets
                        .shops
                        .iter()
                        .find_map(|(shop, set)| Some((shop.clone(), set.first()?)))
                })
                .context("--load needs a [shopify] webhook secret to sign with")?;
            let secret = {
                use secrecy::ExposeSecret;
                secret.expose_secret().as_bytes().to_vec()
            };
            let cfg = loadgen::drive::DriveConfig {
                addr: webhooks.to_string(),
                path: "/webhooks/shopify".into(),
                secret,
                shop,
                topics: vec![
                    "orders/create".into(),
                    "orders/paid".into(),
                    "orders/updated".into(),
                ],
                connections: 8,
                duration: Duration::from_secs(365 * 24 * 3600),
                warmup: Duration::ZERO,
                rate: Some(rate),
                customers: options.customers,
                bodies: 5000,
                seed: 7,
            };
            let mut rx = stop_rx.clone();
            tasks.push((
                "loadgen",
                tokio::spawn(async move {
                    tokio::select! {
                        r = loadgen::drive::drive(cfg) => r.map(|_| ()),
                        _ = rx.wait_for(|s| *s) => Ok(()),
                    }
                }),
            ));
        }
        Ok(Pipeline {
            endpoints: Endpoints {
                bootstrap: bootstrap.to_owned(),
                webhooks,
                ingest_admin,
                segmenter_admin,
                writer_admin,
                okta,
                status: None,
            },
            sim: shared,
            stop,
            tasks,
        })
    }

    /// A shutdown future for tasks the caller adds (e.g. the status page).
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        stopped(&self.stop.subscribe())
    }

    /// Whether a service has stopped on its own (an error).
    pub fn failed(&self) -> Option<&'static str> {
        self.tasks
            .iter()
            .find(|(_, t)| t.is_finished())
            .map(|(n, _)| *n)
    }

    /// Stop every service gracefully (each commits what it finished) and report the first error.
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        let mut first: Option<anyhow::Error> = None;
        for (name, task) in self.tasks {
            let result = task
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r)
                .with_context(|| format!("{name} failed"));
            if let Err(e) = result {
                tracing::error!(error = %format!("{e:#}"), "{name} stopped with an error");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}
