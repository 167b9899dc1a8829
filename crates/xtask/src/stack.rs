//! The local stack: the D1 migrations applied to a local database, then one `wrangler dev` running
//! edge, listener and broker together on 127.0.0.1. `cargo xtask dev` runs it for people, the
//! end-to-end tests run it for themselves (own ports, own state folder, ended on drop).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::net::{free_port, http_get};
use crate::paths;
use crate::process::{self, Group};
use crate::toolchain::Tools;
use crate::workers::{self, Worker, D1_DATABASE};

/// A Jetstream URL nothing listens on (port 9, discard): test stacks start with it.
pub const NO_JETSTREAM: &str = "ws://127.0.0.1:9/subscribe";

/// A PLC/PDS address nothing listens on: test stacks without a local network sign in against it
/// (and fail cleanly), never against the public network.
pub const NO_PLC: &str = "http://127.0.0.1:9";

/// How to run the stack.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Where edge listens (on 127.0.0.1).
    pub port: u16,
    /// Local D1 and Durable Object storage.
    pub persist_dir: PathBuf,
    /// Where wrangler's output goes; `None` shows it on this terminal.
    pub log_file: Option<PathBuf>,
    /// Expose `/__scheduled` on edge so that tests can fire the cron trigger.
    pub test_scheduled: bool,
    /// Start wrangler in this process's group, so that Ctrl-C in a terminal reaches it too.
    pub foreground: bool,
    /// Var overrides, per worker: tests turn on edge's `TEST_HOOKS` and shorten the broker's
    /// timeouts this way; deploys never do. (`wrangler dev --var` reaches only the first config, so
    /// the others get a patched copy of their config instead.)
    pub vars: Vec<WorkerVar>,
    /// Every per-network rate limit of edge (`[[ratelimits]]`) set to this many requests a
    /// window, in a patched copy of its config; `None` keeps the committed limits.
    pub rate_limit: Option<u32>,
    /// Where edge is served to the public when an HTTPS front (run by the caller: the
    /// confidential OAuth client's tests) relays to this stack's plain-http port; `None`: edge is
    /// served as `http://127.0.0.1:<port>`.
    pub public: Option<PublicOrigin>,
    /// wrangler's local observability (`X_LOCAL_OBSERVABILITY`): a collector worker that every
    /// worker streams its invocations and logs to, in the same workerd thread. Measured, it was
    /// half of workerd's time on a publish's way through edge and the broker (docs/benchmarks.md,
    /// "Session 23"); logs reach wrangler's output without it. Off for tests and benchmarks.
    pub local_observability: bool,
}

/// `https://<host>:<port>`: the origin edge sees in every request URL (wrangler's
/// `--local-upstream` with `--upstream-protocol https`), as a deployed edge sees its own. The
/// front that serves it relays each request to the stack's port with `Host` set to that port's
/// address: wrangler's proxy rewrites any `Origin` or `Referer` naming the request's own host
/// to the address it forwards to, which would make every same-origin POST look cross-site.
/// Only 127.0.0.1 listens; whoever connects maps `host` there themselves.
#[derive(Debug, Clone)]
pub struct PublicOrigin {
    pub host: String,
    pub port: u16,
}

impl PublicOrigin {
    /// `https://<host>:<port>`
    pub fn url(&self) -> String {
        format!("https://{}:{}", self.host, self.port)
    }
}

/// A rate limit (requests per network a minute) and broker cap no test reaches: what test stacks
/// run with unless a test asks for the committed ones ([`StackConfig::with_committed_limits`]).
/// Tests open hundreds of sockets and sign in many times from one address, and the binding's
/// windows are aligned to the clock, so a test near a limit would pass or fail by the minute.
pub const UNREACHED_LIMIT: u32 = 1_000_000;
const UNREACHED_SOCKET_CAP: &str = "32768";

/// The limit (requests a window per network) of one of edge's committed `[[ratelimits]]`.
pub fn committed_rate_limit(binding: &str) -> Result<u32> {
    let path = Worker::Edge.wrangler_config();
    let table: toml::Table = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .parse()
        .with_context(|| format!("parsing {}", path.display()))?;
    let limit = crate::preflight::rate_limit_binding(&table, binding)
        .and_then(|b| b.get("simple")?.get("limit")?.as_integer())
        .with_context(|| format!("{}: no rate limit {binding}", path.display()))?;
    Ok(u32::try_from(limit)?)
}

/// One var override for one worker of the stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerVar {
    pub worker: Worker,
    pub name: String,
    pub value: String,
}

impl StackConfig {
    /// A configuration for a test: free ports, a fresh state folder under `target/`, output to a
    /// log file in it.
    pub fn for_test(name: &str) -> Result<StackConfig> {
        let port = free_port()?;
        let dir = paths::scratch().join("runs").join(format!("{name}-{port}"));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).with_context(|| format!("clearing {}", dir.display()))?;
        }
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        StackConfig {
            port,
            persist_dir: dir.join("state"),
            log_file: Some(dir.join("wrangler.log")),
            test_scheduled: true,
            foreground: false,
            vars: Vec::new(),
            rate_limit: None,
            public: None,
            local_observability: false,
        }
        .with_var(Worker::Edge, "TEST_HOOKS", "on")
        .with_var(Worker::Broker, "TEST_HOOKS", "on")
        .with_unreached_limits()
        // Never the public network: a test that wants a Jetstream starts a sidecar and says so.
        .with_var(Worker::Listener, "JETSTREAM_URLS", NO_JETSTREAM)
        // Nor a relay: a test that wants the backfill says so (`with_backfill`).
        .with_var(Worker::Backfill, "BACKFILL_RELAY", "off")
        .with_local_sign_in(NO_PLC, NO_PLC)
        .with_session_keys()?
        .with_health_token()
    }

    /// Rate limits and a per-network socket cap that no test reaches (see [`UNREACHED_LIMIT`]).
    pub fn with_unreached_limits(mut self) -> StackConfig {
        self.rate_limit = Some(UNREACHED_LIMIT);
        self.with_var(
            Worker::Broker,
            "MAX_SOCKETS_PER_NETWORK",
            UNREACHED_SOCKET_CAP,
        )
    }

    /// The rate limits and socket caps of the committed configs, as a deploy has them.
    pub fn with_committed_limits(mut self) -> StackConfig {
        self.rate_limit = None;
        self.vars
            .retain(|v| !(v.worker == Worker::Broker && v.name.starts_with("MAX_SOCKETS")));
        self
    }

    /// A fresh `HEALTH_TOKEN` for edge: the bearer token of the detailed `/health` report.
    pub fn with_health_token(self) -> Result<StackConfig> {
        let token = oauth::random::token()?;
        Ok(self.with_var(Worker::Edge, "HEALTH_TOKEN", &token))
    }

    /// A fresh key ring for edge's `SESSION_KEYS` (the OAuth sessions of a local stack are sealed
    /// like production's, under a key made for this stack).
    pub fn with_session_keys(self) -> Result<StackConfig> {
        let keys = oauth::sealed::Keyring::generate_entry("local")?;
        Ok(self.with_var(Worker::Edge, "SESSION_KEYS", &keys))
    }

    /// The value of a var set for `worker`, if any.
    pub fn var(&self, worker: Worker, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|v| v.worker == worker && v.name == name)
            .map(|v| v.value.as_str())
    }

    /// Edge signs in as the loopback client against a local network: identities (edge's and the
    /// backfill's) from the PLC at `plc_url`, handles resolved by the PDS at `pds_url`, plain
    /// http allowed.
    pub fn with_local_sign_in(self, plc_url: &str, pds_url: &str) -> StackConfig {
        let mut config = self.with_var(Worker::Edge, "OAUTH_CLIENT", "loopback");
        for worker in [Worker::Edge, Worker::Backfill] {
            config = config
                .with_var(worker, "PLC_URL", plc_url)
                .with_var(worker, "HANDLE_RESOLVER", pds_url)
                .with_var(worker, "ALLOW_PRIVATE_NETWORK", "on");
        }
        config
    }

    /// The backfill lists accounts at `relay` (the sidecar's
    /// `com.atproto.sync.listReposByCollection`), with `subrequests` per invocation.
    pub fn with_backfill(self, relay: &str, subrequests: u32) -> StackConfig {
        self.with_var(Worker::Backfill, "BACKFILL_RELAY", relay)
            .with_var(
                Worker::Backfill,
                "BACKFILL_SUBREQUESTS",
                &subrequests.to_string(),
            )
            .with_var(Worker::Backfill, "BACKFILL_RETRY_SECONDS", "2")
    }

    /// Edge signs in as the confidential client production runs, served at `public` (an HTTPS
    /// front the caller runs), with the private JWKs of `keys` (one JWK or a JSON array, the
    /// first signing, as the `OAUTH_PRIVATE_KEY` secret holds them). Identities still come from
    /// where [`StackConfig::with_local_sign_in`] said.
    pub fn with_confidential_client(mut self, public: PublicOrigin, keys: &str) -> StackConfig {
        let public_url = public.url();
        self.public = Some(public);
        self.with_var(Worker::Edge, "OAUTH_CLIENT", "confidential")
            .with_var(Worker::Edge, "PUBLIC_URL", &public_url)
            .with_var(Worker::Edge, "OAUTH_PRIVATE_KEY", keys)
    }

    /// Sets (or replaces) one worker's var.
    pub fn with_var(mut self, worker: Worker, name: &str, value: &str) -> StackConfig {
        self.vars
            .retain(|v| !(v.worker == worker && v.name == name));
        self.vars.push(WorkerVar {
            worker,
            name: name.to_owned(),
            value: value.to_owned(),
        });
        self
    }
}

/// A running stack; dropping it ends wrangler and workerd.
pub struct Stack {
    group: Group,
    config: StackConfig,
    /// How long the first `GET /` that answered 200 took: the workers' first request, which
    /// instantiates edge's and the broker's wasm.
    first_response: Duration,
}

impl Stack {
    /// Applies the migrations, starts `wrangler dev` and waits until edge answers.
    pub fn start(tools: &Tools, config: StackConfig) -> Result<Stack> {
        workers::check_built()?;
        prepare_d1(tools, &config.persist_dir, config.log_file.as_deref())?;
        let inspector_port = free_port()?;
        let mut cmd = tools.wrangler();
        cmd.arg("dev");
        for worker in PUBLIC_FIRST {
            let overrides: Vec<&WorkerVar> =
                config.vars.iter().filter(|v| v.worker == worker).collect();
            // Edge's vars go on the command line; its rate limits can only be patched.
            let (overrides, rate_limit) = match worker.is_public() {
                true => (Vec::new(), config.rate_limit),
                false => (overrides, None),
            };
            if overrides.is_empty() && rate_limit.is_none() {
                cmd.arg("-c").arg(worker.wrangler_config());
            } else {
                let patched = config.persist_dir.with_file_name(worker.config_file());
                write_patched_config(worker, &overrides, rate_limit, &patched)?;
                cmd.arg("-c").arg(patched);
            }
        }
        cmd.args(["--ip", "127.0.0.1", "--port"])
            .arg(config.port.to_string())
            .arg("--inspector-port")
            .arg(inspector_port.to_string())
            .arg("--persist-to")
            .arg(&config.persist_dir)
            .arg("--show-interactive-dev-session=false");
        if config.test_scheduled {
            cmd.arg("--test-scheduled");
        }
        if let Some(public) = &config.public {
            cmd.arg("--local-upstream")
                .arg(format!("{}:{}", public.host, public.port))
                .args(["--upstream-protocol", "https"]);
        }
        for var in config.vars.iter().filter(|v| v.worker.is_public()) {
            cmd.arg("--var").arg(format!("{}:{}", var.name, var.value));
        }
        if !config.local_observability {
            cmd.env("X_LOCAL_OBSERVABILITY", "false");
        }
        redirect(&mut cmd, config.log_file.as_deref())?;
        let group = if config.foreground {
            Group::spawn_foreground("wrangler dev", &mut cmd)?
        } else {
            Group::spawn("wrangler dev", &mut cmd)?
        };
        let mut stack = Stack {
            group,
            config,
            first_response: Duration::ZERO,
        };
        stack.wait_ready(Duration::from_secs(120))?;
        Ok(stack)
    }

    /// Kills the whole stack with SIGKILL (wrangler and every workerd: a crash, nothing flushed)
    /// and starts it again on the same state with `config`.
    pub fn crash_and_restart(&mut self, tools: &Tools, config: StackConfig) -> Result<()> {
        self.group.kill();
        *self = Stack::start(tools, config)?;
        Ok(())
    }

    /// Ends wrangler and starts it again with `config` (usually this stack's own with a var
    /// changed, as a redeploy changes it): same port, same state folder if `config` says so.
    pub fn restart(&mut self, tools: &Tools, config: StackConfig) -> Result<()> {
        self.group.stop(Duration::from_secs(10));
        *self = Stack::start(tools, config)?;
        Ok(())
    }

    /// `http://127.0.0.1:<port>`, or the public origin an HTTPS front serves it at.
    pub fn base_url(&self) -> String {
        match &self.config.public {
            None => format!("http://127.0.0.1:{}", self.config.port),
            Some(public) => public.url(),
        }
    }

    pub fn port(&self) -> u16 {
        self.config.port
    }

    pub fn config(&self) -> &StackConfig {
        &self.config
    }

    /// The last `lines` lines of wrangler's output (tests print it when they fail).
    pub fn log_tail(&self, lines: usize) -> String {
        self.config
            .log_file
            .as_deref()
            .map(|path| process::file_tail(path, lines))
            .unwrap_or_default()
    }

    /// Resident memory of wrangler and workerd, by process (see [`Group::rss`]).
    pub fn rss(&self) -> Vec<(String, u64)> {
        self.group.rss()
    }

    /// CPU time (user + system) the stack's workerd processes have used so far. The workers, their
    /// D1 databases and Durable Objects all run in workerd; wrangler's proxy is another workerd,
    /// idle while load goes to [`Stack::direct_port`]. Node (wrangler itself) is not counted.
    pub fn workerd_cpu(&self) -> Duration {
        self.group
            .cpu_times()
            .into_iter()
            .filter(|(name, _)| name.starts_with("workerd"))
            .map(|(_, time)| time)
            .sum()
    }

    /// The port where workerd itself serves edge, behind `wrangler dev`'s own proxy. The proxy (a
    /// second workerd) holds four descriptors per open WebSocket, so with this machine's 20,000
    /// descriptor limit it fails near 5,000 sockets; load tests that need more connect here, to
    /// the same edge worker, as production traffic would reach it (there is no such proxy there).
    pub fn direct_port(&self) -> Result<u16> {
        for (port, name) in self.group.listening_ports() {
            if port == self.config.port || !name.starts_with("workerd") {
                continue;
            }
            if let Ok((_, body)) = http_get(port, "/health") {
                if body.starts_with("{\"ok\"") {
                    return Ok(port);
                }
            }
        }
        bail!("no port of workerd's own serves edge's /health")
    }

    /// The bearer token of edge's detailed `/health` report, if this stack has one.
    pub fn health_token(&self) -> Option<&str> {
        self.config.var(Worker::Edge, "HEALTH_TOKEN")
    }

    /// Blocks until wrangler exits (`dev` waits here until Ctrl-C).
    pub fn wait(&mut self) -> Result<()> {
        let status = self.group.wait()?;
        if status.success() {
            Ok(())
        } else {
            bail!("wrangler dev exited: {status}")
        }
    }

    /// How long the stack's first answered `GET /` took (its workers' start-up).
    pub fn first_response(&self) -> Duration {
        self.first_response
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.group.exited() {
                bail!(
                    "wrangler dev exited before it was ready ({status}):\n{}",
                    self.log_tail(40)
                );
            }
            let asked = Instant::now();
            if let Ok((200, _)) = http_get(self.config.port, "/") {
                self.first_response = asked.elapsed();
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "wrangler dev was not ready after {timeout:?}:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

/// The workers of the stack, the public one first (wrangler serves the first config's worker).
const PUBLIC_FIRST: [Worker; 4] = [
    Worker::Edge,
    Worker::Listener,
    Worker::Backfill,
    Worker::Broker,
];

/// Writes a copy of `worker`'s wrangler config with `overrides` in its `[vars]`, every rate limit
/// set to `rate_limit` if given, and its relative paths made absolute (the copy lives elsewhere).
fn write_patched_config(
    worker: Worker,
    overrides: &[&WorkerVar],
    rate_limit: Option<u32>,
    to: &Path,
) -> Result<()> {
    let source = worker.wrangler_config();
    let dir = source.parent().context("config without a folder")?;
    let mut table: toml::Table = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?
        .parse()
        .with_context(|| format!("parsing {}", source.display()))?;
    if let Some(toml::Value::String(main)) = table.get_mut("main") {
        *main = dir.join(&*main).display().to_string();
    }
    if let Some(toml::Value::String(assets)) =
        table.get_mut("assets").and_then(|a| a.get_mut("directory"))
    {
        *assets = dir.join(&*assets).display().to_string();
    }
    if let Some(toml::Value::Array(databases)) = table.get_mut("d1_databases") {
        for database in databases.iter_mut() {
            if let Some(toml::Value::String(migrations)) = database.get_mut("migrations_dir") {
                *migrations = dir.join(&*migrations).display().to_string();
            }
        }
    }
    if let (Some(limit), Some(toml::Value::Array(limits))) =
        (rate_limit, table.get_mut("ratelimits"))
    {
        for binding in limits.iter_mut() {
            if let Some(toml::Value::Table(simple)) = binding.get_mut("simple") {
                simple.insert("limit".into(), toml::Value::Integer(i64::from(limit)));
            }
        }
    }
    let vars = table
        .entry("vars")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    let toml::Value::Table(vars) = vars else {
        bail!("{}: [vars] is not a table", source.display());
    };
    for var in overrides {
        vars.insert(var.name.clone(), toml::Value::String(var.value.clone()));
    }
    std::fs::write(to, toml::to_string(&table)?)
        .with_context(|| format!("writing {}", to.display()))
}

/// Where a stack's local D1 lives under its state folder.
const D1_STATE: &str = "v3/d1";

/// Gives `persist_dir` a local D1 database with every migration applied. A fresh state folder gets
/// a copy of a database migrated once per set of migrations (`target/statusphere/d1-template/
/// <hash>`): `wrangler d1 migrations apply` costs about 8 s of CPU, once per test stack otherwise.
/// A folder that has a database already (`dev`'s, kept between runs) gets the migrations applied
/// in place, new ones included.
pub fn prepare_d1(tools: &Tools, persist_dir: &Path, log_file: Option<&Path>) -> Result<()> {
    if persist_dir.join(D1_STATE).exists() {
        return apply_migrations(tools, persist_dir, log_file);
    }
    let template = migrated_template(tools, log_file)?;
    copy_tree(&template.join(D1_STATE), &persist_dir.join(D1_STATE))
}

/// The state folder of a database with every migration in `migrations/` applied, made on first use
/// (under a lock within this process; made elsewhere and renamed into place, so that another
/// process sees it whole or not at all).
fn migrated_template(tools: &Tools, log_file: Option<&Path>) -> Result<PathBuf> {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = MAKING.lock().unwrap_or_else(|p| p.into_inner());
    let template = paths::scratch()
        .join("d1-template")
        .join(migrations_hash()?);
    if template.exists() {
        return Ok(template);
    }
    let making = template.with_extension(format!("making-{}", std::process::id()));
    if making.exists() {
        std::fs::remove_dir_all(&making)?;
    }
    apply_migrations(tools, &making, log_file)?;
    match std::fs::rename(&making, &template) {
        Ok(()) => Ok(template),
        // Another process made it first: theirs is as good.
        Err(_) if template.exists() => {
            let _ = std::fs::remove_dir_all(&making);
            Ok(template)
        }
        Err(e) => Err(e).with_context(|| format!("moving {} into place", making.display())),
    }
}

/// A hash of every migration's name and text, and of the config that names the database.
fn migrations_hash() -> Result<String> {
    use sha2::{Digest, Sha256};
    let dir = paths::root().join("migrations");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .collect();
    files.sort();
    let mut hash = Sha256::new();
    for file in files.iter().chain([&Worker::Edge.wrangler_config()]) {
        hash.update(file.file_name().unwrap_or_default().as_encoded_bytes());
        hash.update(std::fs::read(file).with_context(|| format!("reading {}", file.display()))?);
    }
    Ok(hash.finalize()[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Copies the files under `from` to `to`, folders included.
fn copy_tree(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)
                .with_context(|| format!("copying {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Applies `migrations/` to the local D1 database in `persist_dir`.
pub fn apply_migrations(tools: &Tools, persist_dir: &Path, log_file: Option<&Path>) -> Result<()> {
    let mut cmd = tools.wrangler();
    cmd.args(["d1", "migrations", "apply", D1_DATABASE, "--local", "-c"])
        .arg(Worker::Edge.wrangler_config())
        .arg("--persist-to")
        .arg(persist_dir);
    match log_file {
        None => process::run(&mut cmd),
        Some(path) => {
            redirect(&mut cmd, Some(path))?;
            process::run(&mut cmd)
                .with_context(|| std::fs::read_to_string(path).unwrap_or_default())
        }
    }
}

/// Sends the command's output to `log_file` (appending), or leaves it on the terminal.
fn redirect(cmd: &mut std::process::Command, log_file: Option<&Path>) -> Result<()> {
    if let Some(path) = log_file {
        let file = File::options()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        cmd.stdout(file.try_clone()?)
            .stderr(file)
            .stdin(Stdio::null());
    }
    Ok(())
}
