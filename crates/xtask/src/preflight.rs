//! Before a deploy: what in the four wrangler configs must never reach Cloudflare (test hooks,
//! a local network's settings, plain-text URLs, preview or public URLs where there must be none,
//! a missing rate limit), bindings that do not match between the configs, and what an operator
//! has not set yet (the D1 database id in every config, `PUBLIC_URL`, each secret). A dry run
//! refuses the first two and lists the third; a deploy refuses all three, each with its fix.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::workers::{self, Worker, D1_DATABASE};

/// A secret a worker needs in production, and the command that sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Secret {
    pub worker: Worker,
    pub name: &'static str,
    pub how: &'static str,
}

/// Every secret of a deploy (docs/operations.md): local stacks pass these as vars instead.
pub const SECRETS: [Secret; 3] = [
    Secret {
        worker: Worker::Edge,
        name: "OAUTH_PRIVATE_KEY",
        how: "cargo xtask oauth-key | npx wrangler secret put OAUTH_PRIVATE_KEY -c wrangler/edge.toml",
    },
    Secret {
        worker: Worker::Edge,
        name: "SESSION_KEYS",
        how: "cargo xtask session-key | npx wrangler secret put SESSION_KEYS -c wrangler/edge.toml",
    },
    Secret {
        worker: Worker::Edge,
        name: "HEALTH_TOKEN",
        how: "npx wrangler secret put HEALTH_TOKEN -c wrangler/edge.toml (any long random string; \
              keep it for `/health` with `Authorization: Bearer`)",
    },
];

/// What is known about the secrets already set on Cloudflare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretsSet {
    /// Offline (a dry run): nothing; what must be set is listed instead.
    Unknown,
    /// What `wrangler secret list` said, per worker (none for a worker that does not exist yet).
    Listed(Vec<(Worker, Vec<String>)>),
}

/// The four wrangler configs, parsed.
#[derive(Debug, Clone)]
pub struct Configs {
    dir: PathBuf,
    tables: Vec<(Worker, toml::Table)>,
}

impl Configs {
    /// The committed configs, in `wrangler/`.
    pub fn committed() -> Result<Configs> {
        Configs::read(&workers::config_dir())
    }

    /// `<dir>/<worker>.toml` for each worker.
    pub fn read(dir: &Path) -> Result<Configs> {
        let mut tables = Vec::new();
        for worker in Worker::ALL {
            let path = dir.join(worker.config_file());
            let table = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?
                .parse()
                .with_context(|| format!("parsing {}", path.display()))?;
            tables.push((worker, table));
        }
        Ok(Configs {
            dir: dir.to_path_buf(),
            tables,
        })
    }

    /// Where `worker`'s config is.
    pub fn path(&self, worker: Worker) -> PathBuf {
        self.dir.join(worker.config_file())
    }

    pub fn table(&self, worker: Worker) -> &toml::Table {
        &self
            .tables
            .iter()
            .find(|(w, _)| *w == worker)
            .expect("every worker is read")
            .1
    }

    /// A top-level `[vars]` value of `worker`'s config.
    pub fn var(&self, worker: Worker, name: &str) -> Option<&str> {
        self.table(worker).get("vars")?.get(name)?.as_str()
    }

    /// The app's public https origin (edge's `PUBLIC_URL`), if set.
    pub fn public_url(&self) -> Option<&str> {
        self.var(Worker::Edge, "PUBLIC_URL")
            .filter(|u| !u.is_empty())
    }
}

/// What the preflight found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preflight {
    /// Never deployable, by a dry run either: each with its fix.
    pub refused: Vec<String>,
    /// Not set yet: a dry run lists these, a deploy refuses them.
    pub unset: Vec<String>,
}

impl Preflight {
    /// Checks `configs`, given what is known of the secrets.
    pub fn check(configs: &Configs, secrets: &SecretsSet) -> Preflight {
        let mut preflight = Preflight::default();
        for worker in Worker::ALL {
            let shown = configs.path(worker).display().to_string();
            let table = configs.table(worker);
            preflight.refused.extend(
                config_problems(worker, table)
                    .into_iter()
                    .map(|p| format!("{shown}: {p}")),
            );
        }
        preflight.refused.extend(binding_problems(configs));
        preflight.unset.extend(unset_settings(configs));
        preflight.unset.extend(unset_secrets(secrets));
        preflight
    }

    /// Fails, naming each problem and its fix, if anything is refused (a dry run's check).
    pub fn refuse_defects(&self) -> Result<()> {
        if !self.refused.is_empty() {
            bail!(
                "refusing to deploy; fix these first:\n  {}",
                self.refused.join("\n  ")
            );
        }
        Ok(())
    }

    /// Fails unless a deploy can go ahead: nothing refused, nothing unset.
    pub fn ready(&self) -> Result<()> {
        self.refuse_defects()?;
        if !self.unset.is_empty() {
            bail!(
                "refusing to deploy; set these first (docs/operations.md):\n  {}",
                self.unset.join("\n  ")
            );
        }
        Ok(())
    }

    /// What a dry run prints: what a real deploy would still need.
    pub fn unset_report(&self) -> Option<String> {
        (!self.unset.is_empty()).then(|| {
            format!(
                "before a real deploy, set (docs/operations.md):\n  {}",
                self.unset.join("\n  ")
            )
        })
    }
}

/// The service bindings of `table`: binding name -> the script it names.
fn services(table: &toml::Table) -> Vec<(String, String)> {
    let Some(services) = table.get("services").and_then(toml::Value::as_array) else {
        return Vec::new();
    };
    services
        .iter()
        .filter_map(|s| {
            let binding = s.get("binding")?.as_str()?.to_owned();
            let service = s.get("service")?.as_str()?.to_owned();
            Some((binding, service))
        })
        .collect()
}

/// The `[[d1_databases]]` entry bound as `DB`.
fn d1(table: &toml::Table) -> Option<&toml::Value> {
    table
        .get("d1_databases")?
        .as_array()?
        .iter()
        .find(|d| d.get("binding").and_then(toml::Value::as_str) == Some("DB"))
}

/// The workers that bind the D1 database (all the same one).
const D1_WORKERS: [Worker; 3] = [Worker::Edge, Worker::Listener, Worker::Backfill];

/// The bindings that must agree between the configs: each service binding names the script the
/// other config deploys (edge binds LISTENER, BACKFILL and BROKER, the backfill LISTENER and
/// BROKER, the listener BROKER), and the workers on D1 ([`D1_WORKERS`]) name the same database.
fn binding_problems(configs: &Configs) -> Vec<String> {
    let mut problems = Vec::new();
    let name_of = |worker: Worker| {
        configs
            .table(worker)
            .get("name")
            .and_then(toml::Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let wanted: [(Worker, &str, Worker); 6] = [
        (Worker::Edge, "LISTENER", Worker::Listener),
        (Worker::Edge, "BACKFILL", Worker::Backfill),
        (Worker::Edge, "BROKER", Worker::Broker),
        (Worker::Backfill, "LISTENER", Worker::Listener),
        (Worker::Backfill, "BROKER", Worker::Broker),
        (Worker::Listener, "BROKER", Worker::Broker),
    ];
    for worker in Worker::ALL {
        if name_of(worker).is_empty() {
            problems.push(format!(
                "{}: no `name`: set the script name",
                configs.path(worker).display()
            ));
        }
    }
    for (from, binding, to) in wanted {
        let target = name_of(to);
        let bound = services(configs.table(from));
        match bound.iter().find(|(b, _)| b == binding) {
            None => problems.push(format!(
                "{}: no [[services]] binding {binding}: add one with service = {target:?}",
                configs.path(from).display()
            )),
            Some((_, service)) if *service != target => problems.push(format!(
                "{}: [[services]] {binding} names {service:?}, but {} deploys {target:?}: make them \
                 the same",
                configs.path(from).display(),
                configs.path(to).display()
            )),
            Some(_) => {}
        }
    }
    let databases: Vec<(Worker, Option<&toml::Value>)> = D1_WORKERS
        .into_iter()
        .map(|w| (w, d1(configs.table(w))))
        .collect();
    for (worker, database) in &databases {
        let shown = configs.path(*worker).display().to_string();
        let Some(database) = database else {
            problems.push(format!(
                "{shown}: no [[d1_databases]] binding DB: add it (database_name = \"{D1_DATABASE}\")"
            ));
            continue;
        };
        let name = database.get("database_name").and_then(toml::Value::as_str);
        if name != Some(D1_DATABASE) {
            problems.push(format!(
                "{shown}: [[d1_databases]] DB must be database_name = \"{D1_DATABASE}\" (the \
                 migrations are applied to it), not {name:?}"
            ));
        }
    }
    // An id not set yet is reported as unset ([`unset_settings`]), not as a mismatch.
    let ids: Vec<(Worker, &str)> = databases
        .iter()
        .filter_map(|(w, d)| Some((*w, d.as_ref()?.get("database_id")?.as_str()?)))
        .filter(|(_, id)| is_uuid(id) && *id != PLACEHOLDER_D1_ID)
        .collect();
    if let Some((first, id)) = ids.first() {
        for (other, other_id) in &ids[1..] {
            if other_id != id {
                problems.push(format!(
                    "{} and {} name different D1 database_id values ({id} and {other_id}): every \
                     worker must use the one database",
                    configs.path(*first).display(),
                    configs.path(*other).display()
                ));
            }
        }
    }
    problems
}

/// Whether `id` has the shape of a D1 database id (a UUID).
fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.iter().map(|g| g.len()).eq([8, 4, 4, 4, 12])
        && groups
            .iter()
            .all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// What an operator sets once per account: the D1 id in every config that binds D1, and the
/// confidential client's public https origin.
fn unset_settings(configs: &Configs) -> Vec<String> {
    let mut unset = Vec::new();
    for worker in D1_WORKERS {
        let id = d1(configs.table(worker))
            .and_then(|d| d.get("database_id")?.as_str())
            .unwrap_or_default();
        if id == PLACEHOLDER_D1_ID || !is_uuid(id) {
            unset.push(format!(
                "{}: database_id = {id:?} is not a D1 database: `npx wrangler d1 create \
                 {D1_DATABASE}` and put its id here (and in the other configs that bind DB)",
                configs.path(worker).display()
            ));
        }
    }
    let edge = configs.path(Worker::Edge).display().to_string();
    match configs.public_url() {
        None => unset.push(format!(
            "{edge}: PUBLIC_URL is empty: set it to the app's https origin (the OAuth client id \
             and redirect are made from it), e.g. \"https://statusphere.example.com\""
        )),
        Some(url) => {
            let origin_only = url.starts_with("https://")
                && url["https://".len()..]
                    .trim_end_matches('/')
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
                && url.len() > "https://".len();
            if !origin_only {
                unset.push(format!(
                    "{edge}: PUBLIC_URL = {url:?} must be an https origin (no path, query or \
                     fragment), e.g. \"https://statusphere.example.com\""
                ));
            }
        }
    }
    unset
}

/// Each secret that is not set, with the command that sets it.
fn unset_secrets(secrets: &SecretsSet) -> Vec<String> {
    SECRETS
        .iter()
        .filter(|secret| match secrets {
            SecretsSet::Unknown => true,
            SecretsSet::Listed(listed) => !listed
                .iter()
                .any(|(w, names)| *w == secret.worker && names.iter().any(|n| n == secret.name)),
        })
        .map(|secret| {
            let known = match secrets {
                SecretsSet::Unknown => "must be set",
                SecretsSet::Listed(_) => "is not set",
            };
            format!(
                "secret {} of {} {known}: {}",
                secret.name, secret.worker, secret.how
            )
        })
        .collect()
}

/// The `database_id` the committed edge config carries until an operator sets the real one.
pub const PLACEHOLDER_D1_ID: &str = "00000000-0000-0000-0000-000000000000";

/// The var that turns on edge's `/__test/` routes: only test stacks may set it (`xtask::stack`), so
/// no config that can be deployed may carry it, in any environment.
pub const TEST_HOOKS_VAR: &str = "TEST_HOOKS";

/// Vars whose only safe production value is known: anything else is a local network's setting
/// (plain http and loopback fetches, the loopback OAuth client, handles resolved by one server).
const PRODUCTION_VALUES: [(&str, &str); 3] = [
    ("ALLOW_PRIVATE_NETWORK", "off"),
    ("OAUTH_CLIENT", "confidential"),
    ("HANDLE_RESOLVER", "dns"),
];

/// The listener's benchmark baselines (docs/listener.md): never deployed, whatever their value (a
/// D1 call a statement would spend the free plan's subrequests in a batch).
const BENCH_ONLY_VARS: [&str; 2] = ["STATEMENT_ROWS", "D1_CALLS"];

/// What in `config` (the wrangler config of `worker`) must never reach Cloudflare: test hooks
/// anywhere; in any `vars` table (top level or `[env.*]`), a dev-only value of
/// [`PRODUCTION_VALUES`] or a plain-text `http://` / `ws://` URL; a preview URL (it would serve
/// production data and bindings at a second address); a public URL for a private worker.
pub fn config_problems(worker: Worker, config: &toml::Table) -> Vec<String> {
    let mut problems = Vec::new();
    if mentions_test_hooks(&toml::Value::Table(config.clone())) {
        problems.push(format!(
            "sets {TEST_HOOKS_VAR}: test hooks are for local test stacks only; remove it"
        ));
    }
    let mut scopes = vec![("top level".to_owned(), config)];
    if let Some(envs) = config.get("env").and_then(toml::Value::as_table) {
        for (name, env) in envs {
            if let Some(env) = env.as_table() {
                scopes.push((format!("[env.{name}]"), env));
            }
        }
    }
    for (scope, table) in &scopes {
        if let Some(vars) = table.get("vars").and_then(toml::Value::as_table) {
            for (name, value) in vars {
                if BENCH_ONLY_VARS.contains(&name.as_str()) {
                    problems.push(format!(
                        "{scope}: {name} is a benchmark's baseline, never deployed; remove it"
                    ));
                }
                let Some(value) = value.as_str() else {
                    continue;
                };
                if let Some((_, safe)) = PRODUCTION_VALUES.iter().find(|(var, _)| var == name) {
                    if value != *safe {
                        problems.push(format!(
                            "{scope}: {name} = {value:?} is a local network's setting; \
                             production needs {safe:?}"
                        ));
                    }
                }
                for url in value.split(',').map(str::trim) {
                    if url.starts_with("http://") || url.starts_with("ws://") {
                        problems.push(format!(
                            "{scope}: {name} has the plain-text URL {url}; use https:// or wss://"
                        ));
                    }
                }
            }
        }
        if table.get("preview_urls").and_then(toml::Value::as_bool) != Some(false)
            && (scope == "top level" || table.contains_key("preview_urls"))
        {
            problems.push(format!(
                "{scope}: set preview_urls = false (a preview would serve production data \
                 and bindings at another address)"
            ));
        }
        if !worker.is_public()
            && table.get("workers_dev").and_then(toml::Value::as_bool) != Some(false)
            && (scope == "top level" || table.contains_key("workers_dev"))
        {
            problems.push(format!(
                "{scope}: set workers_dev = false ({worker} has no public route: only service \
                 bindings reach it)"
            ));
        }
    }
    if worker == Worker::Edge {
        problems.extend(rate_limit_problems(config));
    }
    problems
}

/// Each of edge's rate limits (`domain::limit::Guarded`) must be declared as a `[[ratelimits]]`
/// binding with a positive limit and the period its refusals announce; without one, the route is
/// not limited at all.
fn rate_limit_problems(config: &toml::Table) -> Vec<String> {
    use domain::limit::{Guarded, PERIOD_S};
    let mut problems = Vec::new();
    for guarded in Guarded::ALL {
        let name = guarded.binding();
        let Some(binding) = rate_limit_binding(config, name) else {
            problems.push(format!(
                "no [[ratelimits]] binding {name}: add it (name, namespace_id, \
                 simple = {{ limit, period = {PERIOD_S} }})"
            ));
            continue;
        };
        let simple = binding.get("simple");
        let limit = simple
            .and_then(|s| s.get("limit"))
            .and_then(toml::Value::as_integer);
        let period = simple
            .and_then(|s| s.get("period"))
            .and_then(toml::Value::as_integer);
        if limit.is_none_or(|l| l <= 0) {
            problems.push(format!(
                "[[ratelimits]] {name}: set simple.limit to a positive number"
            ));
        }
        if period != Some(i64::from(PERIOD_S)) {
            problems.push(format!(
                "[[ratelimits]] {name}: simple.period must be {PERIOD_S} (refusals say to wait \
                 that long)"
            ));
        }
        if binding.get("namespace_id").is_none() {
            problems.push(format!("[[ratelimits]] {name}: set a namespace_id"));
        }
    }
    problems
}

/// The `[[ratelimits]]` binding called `name` in a wrangler config.
pub fn rate_limit_binding<'a>(config: &'a toml::Table, name: &str) -> Option<&'a toml::Value> {
    config
        .get("ratelimits")?
        .as_array()?
        .iter()
        .find(|b| b.get("name").and_then(toml::Value::as_str) == Some(name))
}

fn mentions_test_hooks(value: &toml::Value) -> bool {
    match value {
        toml::Value::Table(table) => table
            .iter()
            .any(|(key, value)| key == TEST_HOOKS_VAR || mentions_test_hooks(value)),
        toml::Value::Array(items) => items.iter().any(mentions_test_hooks),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn committed(worker: Worker) -> String {
        std::fs::read_to_string(worker.wrangler_config()).unwrap()
    }

    fn problems(worker: Worker, config: &str) -> Vec<String> {
        config_problems(worker, &config.parse().unwrap())
    }

    #[test]
    fn the_committed_configs_are_safe_and_say_what_is_unset() {
        for worker in Worker::ALL {
            let problems = problems(worker, &committed(worker));
            assert!(problems.is_empty(), "{worker}: {problems:?}");
        }
        let preflight = Preflight::check(&Configs::committed().unwrap(), &SecretsSet::Unknown);
        assert_eq!(preflight.refused, Vec::<String>::new());
        preflight.refuse_defects().expect("a dry run goes ahead");
        // What an operator sets once: every D1 id, PUBLIC_URL, and every secret.
        let unset = preflight.unset.join("\n");
        for says in [
            "edge.toml: database_id",
            "listener.toml: database_id",
            "backfill.toml: database_id",
            "PUBLIC_URL is empty",
            "secret OAUTH_PRIVATE_KEY of edge must be set: cargo xtask oauth-key",
            "secret SESSION_KEYS of edge must be set: cargo xtask session-key",
            "secret HEALTH_TOKEN of edge must be set",
        ] {
            assert!(unset.contains(says), "{says:?} not in\n{unset}");
        }
        assert_eq!(preflight.unset.len(), 7, "{unset}");
        let refusal = preflight.ready().unwrap_err().to_string();
        assert!(refusal.contains("set these first"), "{refusal}");
    }

    /// A copy of the committed configs in a folder of its own, changed by `edit`.
    fn configs_with(name: &str, edit: impl Fn(Worker, String) -> String) -> Configs {
        let dir = std::env::temp_dir().join(format!("preflight-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for worker in Worker::ALL {
            let text = edit(worker, committed(worker));
            std::fs::write(dir.join(worker.config_file()), text).unwrap();
        }
        Configs::read(&dir).unwrap()
    }

    const D1_ID: &str = "0f8e5a2c-3b1d-4c6e-9a7f-12ab34cd56ef";

    /// The committed configs as an operator fills them in: every D1 id and PUBLIC_URL.
    fn filled(_: Worker, text: String) -> String {
        text.replace(PLACEHOLDER_D1_ID, D1_ID).replace(
            "PUBLIC_URL = \"\"",
            "PUBLIC_URL = \"https://statusphere.example.com\"",
        )
    }

    fn all_secrets() -> SecretsSet {
        SecretsSet::Listed(vec![(
            Worker::Edge,
            SECRETS.iter().map(|s| s.name.to_owned()).collect(),
        )])
    }

    #[test]
    fn a_filled_in_account_is_ready() {
        let configs = configs_with("ready", filled);
        let preflight = Preflight::check(&configs, &all_secrets());
        assert_eq!(preflight, Preflight::default());
        preflight.ready().unwrap();
    }

    #[test]
    fn each_unset_setting_and_secret_is_named_with_its_fix() {
        let unset = |configs: &Configs, secrets: &SecretsSet| {
            let preflight = Preflight::check(configs, secrets);
            assert!(preflight.refused.is_empty(), "{:?}", preflight.refused);
            preflight.unset.join("\n")
        };
        // The listener's D1 id left as committed (only edge's was set).
        let configs = configs_with("listener-d1", |w, t| match w {
            Worker::Listener => t,
            _ => filled(w, t),
        });
        let text = unset(&configs, &all_secrets());
        assert!(
            text.contains("listener.toml: database_id") && !text.contains("edge.toml: database_id"),
            "{text}"
        );
        // (A plain http:// one is refused outright, like any plain-text URL in the vars.)
        for url in [
            "https://statusphere.example.com/app",
            "https://",
            "https://a b",
        ] {
            let configs = configs_with("url", |w, t| {
                filled(w, t).replace("https://statusphere.example.com", url)
            });
            let text = unset(&configs, &all_secrets());
            assert!(text.contains("must be an https origin"), "{url}: {text}");
        }
        let missing = SecretsSet::Listed(vec![(Worker::Edge, vec!["OAUTH_PRIVATE_KEY".into()])]);
        let text = unset(&configs_with("secrets", filled), &missing);
        assert!(
            text.contains("secret SESSION_KEYS of edge is not set: cargo xtask session-key"),
            "{text}"
        );
        assert!(
            text.contains("secret HEALTH_TOKEN of edge is not set"),
            "{text}"
        );
        assert!(!text.contains("OAUTH_PRIVATE_KEY"), "{text}");
        // A worker that does not exist yet has no secrets at all.
        let text = unset(
            &configs_with("none", filled),
            &SecretsSet::Listed(Vec::new()),
        );
        assert_eq!(text.lines().count(), 3, "{text}");
    }

    #[test]
    fn bindings_that_do_not_match_between_the_configs_are_refused() {
        let refused = |name: &str, edit: &dyn Fn(Worker, String) -> String, says: &str| {
            let configs = configs_with(name, |w, t| edit(w, filled(w, t)));
            let preflight = Preflight::check(&configs, &all_secrets());
            let text = preflight.refused.join("\n");
            assert!(text.contains(says), "{says:?} not in\n{text}");
            assert!(preflight.refuse_defects().is_err());
        };
        refused(
            "renamed-broker",
            &|w, t| match w {
                Worker::Broker => {
                    t.replace("name = \"statusphere-broker\"", "name = \"my-broker\"")
                }
                _ => t,
            },
            "[[services]] BROKER names \"statusphere-broker\", but",
        );
        refused(
            "no-listener-binding",
            &|w, t| match w {
                Worker::Edge => t.replace("binding = \"LISTENER\"", "binding = \"LISTENING\""),
                _ => t,
            },
            "no [[services]] binding LISTENER",
        );
        refused(
            "renamed-backfill",
            &|w, t| match w {
                Worker::Backfill => {
                    t.replace("name = \"statusphere-backfill\"", "name = \"my-backfill\"")
                }
                _ => t,
            },
            "[[services]] BACKFILL names \"statusphere-backfill\", but",
        );
        refused(
            "no-backfill-broker",
            &|w, t| match w {
                Worker::Backfill => t.replace("binding = \"BROKER\"", "binding = \"BROKERS\""),
                _ => t,
            },
            "backfill.toml: no [[services]] binding BROKER",
        );
        for other in [Worker::Listener, Worker::Backfill] {
            refused(
                "two-databases",
                &|w, t| {
                    if w == other {
                        t.replace(D1_ID, "aaaaaaaa-3b1d-4c6e-9a7f-12ab34cd56ef")
                    } else {
                        t
                    }
                },
                &format!("{other}.toml name different D1 database_id values"),
            );
        }
        refused(
            "database-name",
            &|w, t| match w {
                Worker::Edge => t.replace(
                    "database_name = \"statusphere\"",
                    "database_name = \"other\"",
                ),
                _ => t,
            },
            "database_name = \"statusphere\"",
        );
    }

    #[test]
    fn every_dev_only_setting_is_refused() {
        let edge = committed(Worker::Edge);
        let refused = |worker: Worker, config: &str, says: &str| {
            let problems = problems(worker, config);
            assert!(
                problems.iter().any(|p| p.contains(says)),
                "{says:?} not in {problems:?} for:\n{config}"
            );
        };
        let with = |from: &str, to: &str| {
            assert!(edge.contains(from), "{from}");
            edge.replacen(from, to, 1)
        };
        refused(
            Worker::Edge,
            &format!("{edge}\nTEST_HOOKS = \"on\""),
            "TEST_HOOKS",
        );
        refused(
            Worker::Edge,
            &format!("{edge}\n[env.staging.vars]\nTEST_HOOKS = \"on\""),
            "TEST_HOOKS",
        );
        refused(
            Worker::Edge,
            &with(
                "ALLOW_PRIVATE_NETWORK = \"off\"",
                "ALLOW_PRIVATE_NETWORK = \"on\"",
            ),
            "ALLOW_PRIVATE_NETWORK",
        );
        refused(
            Worker::Edge,
            &with(
                "OAUTH_CLIENT = \"confidential\"",
                "OAUTH_CLIENT = \"loopback\"",
            ),
            "OAUTH_CLIENT",
        );
        refused(
            Worker::Edge,
            &with(
                "HANDLE_RESOLVER = \"dns\"",
                "HANDLE_RESOLVER = \"http://127.0.0.1:2583\"",
            ),
            "HANDLE_RESOLVER",
        );
        refused(
            Worker::Edge,
            &with("https://plc.directory", "http://plc.directory"),
            "plain-text URL http://plc.directory",
        );
        refused(
            Worker::Edge,
            &format!("{edge}\n[env.staging]\npreview_urls = true\n"),
            "[env.staging]: set preview_urls = false",
        );
        refused(
            Worker::Edge,
            &with("preview_urls = false", ""),
            "preview_urls",
        );
        refused(
            Worker::Edge,
            &format!("{edge}\n[env.local.vars]\nALLOW_PRIVATE_NETWORK = \"on\"\n"),
            "[env.local]: ALLOW_PRIVATE_NETWORK",
        );
        let listener = committed(Worker::Listener);
        refused(
            Worker::Listener,
            &listener.replacen(
                "[vars]",
                "[vars]\nJETSTREAM_URLS = \"wss://jetstream1.us-east.bsky.network/subscribe,ws://127.0.0.1:6008/subscribe\"",
                1,
            ),
            "ws://127.0.0.1:6008/subscribe",
        );
        refused(
            Worker::Listener,
            &listener.replacen("workers_dev = false", "workers_dev = true", 1),
            "workers_dev = false",
        );
        for baseline in ["STATEMENT_ROWS = \"one\"", "D1_CALLS = \"each\""] {
            refused(
                Worker::Listener,
                &listener.replacen("[vars]", &format!("[vars]\n{baseline}"), 1),
                "a benchmark's baseline",
            );
        }
        refused(
            Worker::Edge,
            &with("name = \"WRITE_LIMIT\"", "name = \"WRITES\""),
            "no [[ratelimits]] binding WRITE_LIMIT",
        );
        refused(
            Worker::Edge,
            &with(
                "simple = { limit = 10, period = 60 }",
                "simple = { limit = 10, period = 10 }",
            ),
            "SIGN_IN_LIMIT: simple.period must be 60",
        );
    }
}
