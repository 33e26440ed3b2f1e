//! infra/compose.yaml, infra/prometheus.yml and the Grafana dashboard name only things that
//! exist: pinned images from known releases, `driftline` subcommands and environment
//! variables the code reads, broker settings Kafka has, metrics the services export.
//! (Docker Hub is not reachable from CI, so the image tags are checked against a list of
//! releases rather than pulled.)
//!
//! The YAML is read with a small parser for the block subset the file uses (maps, lists,
//! flow lists, anchors and `<<` merges); anything outside that subset fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};

/// Images the compose file may use, each a published release.
const IMAGES: &[(&str, &str)] = &[
    // Apache Kafka's own image, the release infra/kafka/pom.xml pins for the embedded broker.
    (
        "apache/kafka:4.1.1",
        "https://hub.docker.com/r/apache/kafka/tags",
    ),
    // Prometheus v2.55.1, released 2024-11-04 (the last 2.x line before 3.0).
    (
        "prom/prometheus:v2.55.1",
        "https://github.com/prometheus/prometheus/releases/tag/v2.55.1",
    ),
    // Grafana 11.3.0, released 2024-10-22.
    (
        "grafana/grafana:11.3.0",
        "https://github.com/grafana/grafana/releases/tag/v11.3.0",
    ),
    // Built from infra/Dockerfile by compose itself.
    ("driftline:dev", "infra/Dockerfile"),
];

/// Base images of infra/Dockerfile: the official Rust image for this toolchain and Debian 12.
const BASE_IMAGES: &[&str] = &["rust:1.95-bookworm", "debian:bookworm-slim"];

/// Broker settings the compose file may set (KAFKA_FOO_BAR is `foo.bar`), from Kafka's
/// broker configuration reference, besides those of infra/kafka/broker.properties.
const KAFKA_SETTINGS: &[&str] = &[
    "default.replication.factor",
    "min.insync.replicas",
    "heap.opts",
    "node.id",
    "process.roles",
    "listeners",
    "advertised.listeners",
    "listener.security.protocol.map",
    "controller.listener.names",
    "inter.broker.listener.name",
    "controller.quorum.voters",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "group.initial.rebalance.delay.ms",
    "auto.create.topics.enable",
    "num.partitions",
    "log.dirs",
];

/// Grafana settings (GF_<SECTION>_<KEY>) the compose file may set.
const GRAFANA_SETTINGS: &[&str] = &[
    "GF_AUTH_ANONYMOUS_ENABLED",
    "GF_AUTH_ANONYMOUS_ORG_ROLE",
    "GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH",
    "GF_SECURITY_ADMIN_PASSWORD",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

// ---------------------------------------------------------------------------------------
// A small YAML reader: block maps and lists, scalars, flow lists, anchors, `<<` merges.

#[derive(Debug, Clone, PartialEq)]
enum Yaml {
    Scalar(String),
    List(Vec<Yaml>),
    Map(BTreeMap<String, Yaml>),
}

impl Yaml {
    fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(m) => m.get(key),
            _ => None,
        }
    }

    fn map(&self) -> Result<&BTreeMap<String, Yaml>> {
        match self {
            Yaml::Map(m) => Ok(m),
            other => bail!("expected a map, found {other:?}"),
        }
    }

    fn scalar(&self) -> Result<&str> {
        match self {
            Yaml::Scalar(s) => Ok(s),
            other => bail!("expected a scalar, found {other:?}"),
        }
    }

    /// A command as words: a flow/block list or a plain string.
    fn words(&self) -> Result<Vec<String>> {
        match self {
            Yaml::Scalar(s) => Ok(s.split_whitespace().map(String::from).collect()),
            Yaml::List(l) => l.iter().map(|x| x.scalar().map(String::from)).collect(),
            Yaml::Map(_) => bail!("expected a command, found a map"),
        }
    }
}

struct Line {
    no: usize,
    indent: usize,
    text: String,
}

struct Parser {
    lines: Vec<Line>,
    pos: usize,
    anchors: BTreeMap<String, Yaml>,
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

/// Strips a trailing ` # comment` outside quotes.
fn strip_comment(s: &str) -> &str {
    let (mut single, mut double) = (false, false);
    let bytes = s.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b'#' if !single && !double && (i == 0 || bytes[i - 1] == b' ') => {
                return s[..i].trim_end();
            }
            _ => {}
        }
    }
    s.trim_end()
}

/// Splits `key: value` at the first `: ` (or a trailing `:`) outside quotes.
fn split_key(s: &str) -> Option<(String, &str)> {
    let (mut single, mut double) = (false, false);
    let bytes = s.as_bytes();
    for (i, &c) in bytes.iter().enumerate() {
        match c {
            b'\'' if !double => single = !single,
            b'"' if !single => double = !double,
            b':' if !single && !double && (i + 1 == bytes.len() || bytes[i + 1] == b' ') => {
                return Some((unquote(&s[..i]), s[i + 1..].trim()));
            }
            _ => {}
        }
    }
    None
}

impl Parser {
    fn new(text: &str) -> Result<Self> {
        let mut lines = Vec::new();
        for (i, raw) in text.lines().enumerate() {
            ensure!(
                !raw.contains('\t'),
                "line {}: a tab (YAML indents with spaces)",
                i + 1
            );
            let body = strip_comment(raw);
            if body.trim().is_empty() {
                continue;
            }
            let indent = body.len() - body.trim_start().len();
            lines.push(Line {
                no: i + 1,
                indent,
                text: body.trim_start().to_string(),
            });
        }
        Ok(Self {
            lines,
            pos: 0,
            anchors: BTreeMap::new(),
        })
    }

    fn parse(mut self) -> Result<Yaml> {
        let doc = self.block(0)?;
        if let Some(l) = self.lines.get(self.pos) {
            bail!("line {}: unexpected indentation", l.no);
        }
        Ok(doc)
    }

    fn block(&mut self, indent: usize) -> Result<Yaml> {
        let Some(first) = self.lines.get(self.pos) else {
            return Ok(Yaml::Scalar(String::new()));
        };
        ensure!(
            first.indent == indent,
            "line {}: expected indentation {indent}, found {}",
            first.no,
            first.indent
        );
        if first.text.starts_with("- ") || first.text == "-" {
            let mut items = Vec::new();
            while let Some(l) = self.lines.get(self.pos) {
                if l.indent != indent || !(l.text.starts_with("- ") || l.text == "-") {
                    break;
                }
                let rest = l.text[1..].trim().to_string();
                let no = l.no;
                if split_key(&rest).is_some() && !rest.starts_with('"') && !rest.starts_with('{') {
                    // `- key: value` starts a map indented past the dash: read it as one.
                    let item_indent = indent + 2;
                    self.lines[self.pos] = Line {
                        no,
                        indent: item_indent,
                        text: rest,
                    };
                    items.push(self.block(item_indent)?);
                    continue;
                }
                self.pos += 1;
                items.push(self.value(&rest, indent, no)?);
            }
            return Ok(Yaml::List(items));
        }
        let mut map = BTreeMap::new();
        while let Some(l) = self.lines.get(self.pos) {
            if l.indent < indent {
                break;
            }
            ensure!(l.indent == indent, "line {}: unexpected indentation", l.no);
            let no = l.no;
            let (key, rest) =
                split_key(&l.text).with_context(|| format!("line {no}: expected `key: value`"))?;
            let rest = rest.to_string();
            self.pos += 1;
            let value = self.value(&rest, indent, no)?;
            if key == "<<" {
                // Merge: keys of this map win over the merged ones.
                for (k, v) in value
                    .map()
                    .with_context(|| format!("line {no}: `<<` needs a map"))?
                {
                    map.entry(k.clone()).or_insert_with(|| v.clone());
                }
                continue;
            }
            ensure!(!map.contains_key(&key), "line {no}: duplicate key {key:?}");
            map.insert(key, value);
        }
        Ok(Yaml::Map(map))
    }

    /// The value after `key:` or `- `: inline, an alias, or a nested block.
    fn value(&mut self, rest: &str, indent: usize, no: usize) -> Result<Yaml> {
        let (anchor, rest) = match rest.strip_prefix('&') {
            Some(r) => {
                let (name, r) = r.split_once(' ').unwrap_or((r, ""));
                (Some(name.to_string()), r.trim())
            }
            None => (None, rest),
        };
        let value = if let Some(alias) = rest.strip_prefix('*') {
            self.anchors
                .get(alias)
                .cloned()
                .with_context(|| format!("line {no}: unknown alias *{alias}"))?
        } else if rest.is_empty() {
            match self.lines.get(self.pos) {
                Some(next) if next.indent > indent => self.block(next.indent)?,
                _ => Yaml::Scalar(String::new()),
            }
        } else if let Some(inner) = rest.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .with_context(|| format!("line {no}: unclosed flow list"))?;
            Yaml::List(
                inner
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Yaml::Scalar(unquote(s)))
                    .collect(),
            )
        } else if let Some(inner) = rest.strip_prefix('{') {
            let inner = inner
                .strip_suffix('}')
                .with_context(|| format!("line {no}: unclosed flow map"))?;
            let mut m = BTreeMap::new();
            for kv in inner.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = split_key(kv)
                    .with_context(|| format!("line {no}: bad flow map entry {kv:?}"))?;
                m.insert(k, Yaml::Scalar(unquote(v)));
            }
            Yaml::Map(m)
        } else {
            ensure!(
                !rest.starts_with('|') && !rest.starts_with('>'),
                "line {no}: block scalars are not used here"
            );
            Yaml::Scalar(unquote(rest))
        };
        if let Some(a) = anchor {
            self.anchors.insert(a, value.clone());
        }
        Ok(value)
    }
}

fn load(path: &Path) -> Result<Yaml> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Parser::new(&text)?
        .parse()
        .with_context(|| format!("parsing {}", path.display()))
}

// ---------------------------------------------------------------------------------------
// What the code defines.

fn rust_sources(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
}

/// All Rust source of the services and producers, to look names up in.
fn sources() -> String {
    let mut s = String::new();
    rust_sources(&root().join("consumers"), &mut s);
    rust_sources(&root().join("producers"), &mut s);
    s
}

#[test]
fn compose_file_parses_and_every_service_has_a_pinned_known_image() -> Result<()> {
    let compose = load(&root().join("infra/compose.yaml"))?;
    let services = compose.get("services").context("no services")?.map()?;
    for name in [
        "kafka",
        "topics",
        "predictor",
        "monitor",
        "trainer",
        "joiner",
        "prometheus",
        "grafana",
    ] {
        ensure!(
            services.contains_key(name),
            "compose.yaml has no {name} service"
        );
    }
    for (name, svc) in services {
        let image = svc.get("image").map(Yaml::scalar).transpose()?;
        ensure!(
            image.is_some() || svc.get("build").is_some(),
            "{name}: neither image nor build"
        );
        if let Some(image) = image {
            ensure!(
                IMAGES.iter().any(|(i, _)| *i == image),
                "{name}: image {image:?} is not in the list of known releases (pin a tag and add it with its source)"
            );
            ensure!(
                !image.ends_with(":latest") && image.contains(':'),
                "{name}: {image:?} is not pinned"
            );
        }
        if let Some(build) = svc.get("build") {
            let dockerfile = build
                .get("dockerfile")
                .map(Yaml::scalar)
                .transpose()?
                .unwrap_or("Dockerfile");
            let context = build
                .get("context")
                .map(Yaml::scalar)
                .transpose()?
                .unwrap_or(".");
            let path = root().join("infra").join(context).join(dockerfile);
            ensure!(path.is_file(), "{name}: {} does not exist", path.display());
        }
        for (host, what) in [("volumes", "volume")] {
            let Some(Yaml::List(vols)) = svc.get(host) else {
                continue;
            };
            for v in vols {
                let src = v.scalar()?.split(':').next().unwrap_or_default();
                if src.starts_with('.') {
                    ensure!(
                        root().join("infra").join(src).exists(),
                        "{name}: {what} {src} does not exist"
                    );
                } else {
                    let declared = compose.get("volumes").and_then(|v| v.get(src)).is_some();
                    ensure!(declared, "{name}: named volume {src} is not declared");
                }
            }
        }
    }
    let dockerfile = std::fs::read_to_string(root().join("infra/Dockerfile"))?;
    for line in dockerfile.lines().filter(|l| l.starts_with("FROM ")) {
        let image = line.split_whitespace().nth(1).unwrap_or_default();
        ensure!(
            BASE_IMAGES.contains(&image),
            "Dockerfile: base image {image:?} is not in the known list"
        );
    }
    Ok(())
}

#[test]
fn compose_commands_and_environment_exist_in_the_code() -> Result<()> {
    let compose = load(&root().join("infra/compose.yaml"))?;
    let src = sources();
    let main = std::fs::read_to_string(root().join("consumers/driftline/src/main.rs"))?;
    let producers = std::fs::read_to_string(root().join("producers/Cargo.toml"))?;
    let shared = shared_broker_settings()?;
    let subcommands: BTreeMap<&str, &str> = [
        ("predictor", "Predictor("),
        ("monitor", "Monitor("),
        ("trainer", "Trainer("),
        ("joiner", "Joiner("),
        ("alerts", "Alerts("),
        ("topics apply", "Apply {"),
    ]
    .into();
    let mut seen_commands = BTreeSet::new();
    for (name, svc) in compose.get("services").context("no services")?.map()? {
        let image = svc
            .get("image")
            .map(Yaml::scalar)
            .transpose()?
            .unwrap_or_default();
        if image.starts_with("driftline:") {
            match svc.get("entrypoint").map(Yaml::words).transpose()? {
                Some(ep) => {
                    let bin = ep.first().context("empty entrypoint")?;
                    ensure!(
                        producers.contains(&format!("name = \"{bin}\"")),
                        "{name}: no binary {bin:?}"
                    );
                }
                None => {
                    let words = svc
                        .get("command")
                        .map(Yaml::words)
                        .transpose()?
                        .with_context(|| format!("{name}: no command"))?;
                    let cmd = if words.first().map(String::as_str) == Some("topics") {
                        words[..2].join(" ")
                    } else {
                        words[0].clone()
                    };
                    let variant = subcommands
                        .get(cmd.as_str())
                        .with_context(|| format!("{name}: unknown subcommand {cmd:?}"))?;
                    ensure!(
                        main.contains(variant),
                        "{name}: `driftline {cmd}` is not a subcommand in main.rs"
                    );
                    seen_commands.insert(cmd);
                }
            }
        }
        let Some(env) = svc.get("environment") else {
            continue;
        };
        for key in env.map()?.keys() {
            if key.starts_with("DRIFTLINE_") || key.starts_with("SEND_DATA_") {
                ensure!(
                    src.contains(&format!("\"{key}\"")),
                    "{name}: {key} is read nowhere in consumers/ or producers/"
                );
            } else if let Some(setting) = key.strip_prefix("KAFKA_") {
                let setting = setting.to_lowercase().replace('_', ".");
                ensure!(
                    KAFKA_SETTINGS.contains(&setting.as_str()) || shared.contains_key(&setting),
                    "{name}: {key} ({setting}) is not a known broker setting"
                );
            } else if key.starts_with("GF_") {
                ensure!(
                    GRAFANA_SETTINGS.contains(&key.as_str()),
                    "{name}: {key} is not a known Grafana setting"
                );
            } else {
                ensure!(
                    key == "RUST_LOG",
                    "{name}: unexpected environment variable {key}"
                );
            }
        }
    }
    ensure!(
        seen_commands.len() == subcommands.len(),
        "every service is in compose.yaml: {seen_commands:?}"
    );
    Ok(())
}

/// infra/kafka/broker.properties: what every node the scripts start runs with.
fn shared_broker_settings() -> Result<BTreeMap<String, String>> {
    let text = std::fs::read_to_string(root().join("infra/kafka/broker.properties"))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect())
}

#[test]
fn compose_broker_runs_with_the_settings_the_scripts_and_tests_use() -> Result<()> {
    let compose = load(&root().join("infra/compose.yaml"))?;
    let env = compose
        .get("services")
        .and_then(|s| s.get("kafka"))
        .and_then(|k| k.get("environment"))
        .context("no kafka service environment")?
        .map()?;
    let shared = shared_broker_settings()?;
    ensure!(shared.len() > 10, "broker.properties read: {shared:?}");
    for (key, value) in &shared {
        if let Some(heap) = key.strip_prefix("driftline.heap") {
            ensure!(heap.is_empty(), "unknown script setting {key}");
            let opts = env
                .get("KAFKA_HEAP_OPTS")
                .context("no KAFKA_HEAP_OPTS")?
                .scalar()?;
            ensure!(
                opts.split_whitespace().any(|o| o == format!("-Xmx{value}")),
                "KAFKA_HEAP_OPTS {opts:?} differs from the scripts' heap {value}"
            );
            continue;
        }
        let var = format!("KAFKA_{}", key.to_uppercase().replace('.', "_"));
        let set = env
            .get(&var)
            .with_context(|| format!("compose's kafka does not set {var} ({key}={value})"))?
            .scalar()?;
        ensure!(
            set == value,
            "{var} is {set:?} in compose, {value:?} in broker.properties"
        );
    }
    Ok(())
}

#[test]
fn prometheus_scrapes_the_ports_the_services_listen_on() -> Result<()> {
    let compose = load(&root().join("infra/compose.yaml"))?;
    let prom = load(&root().join("infra/prometheus.yml"))?;
    let Some(Yaml::List(jobs)) = prom.get("scrape_configs") else {
        bail!("no scrape_configs")
    };
    let mut targets = BTreeSet::new();
    for job in jobs {
        let Some(Yaml::List(configs)) = job.get("static_configs") else {
            continue;
        };
        for c in configs {
            let Some(Yaml::List(ts)) = c.get("targets") else {
                continue;
            };
            for t in ts {
                targets.insert(t.scalar()?.to_string());
            }
        }
    }
    let services = compose.get("services").context("no services")?.map()?;
    for (name, env) in [
        ("predictor", "DRIFTLINE_HTTP_ADDR"),
        ("monitor", "DRIFTLINE_MONITOR_HTTP_ADDR"),
        ("trainer", "DRIFTLINE_TRAINER_HTTP_ADDR"),
        ("joiner", "DRIFTLINE_JOINER_HTTP_ADDR"),
    ] {
        let addr = services[name]
            .get("environment")
            .and_then(|e| e.get(env))
            .context("no HTTP address")?
            .scalar()?;
        let port = addr.rsplit(':').next().unwrap_or_default();
        ensure!(
            addr.starts_with("0.0.0.0:"),
            "{name} must listen on all interfaces in a container, not {addr}"
        );
        ensure!(
            targets.contains(&format!("{name}:{port}")),
            "prometheus.yml does not scrape {name}:{port}: {targets:?}"
        );
    }
    Ok(())
}

#[test]
fn grafana_dashboard_queries_only_metrics_the_services_export() -> Result<()> {
    let text = std::fs::read_to_string(root().join("infra/grafana/driftline.json"))?;
    let dash: serde_json::Value =
        serde_json::from_str(&text).context("driftline.json is not JSON")?;
    let src = sources();
    let mut exprs = Vec::new();
    for panel in dash["panels"].as_array().context("no panels")? {
        for t in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(
                t["expr"]
                    .as_str()
                    .context("a target without expr")?
                    .to_string(),
            );
        }
    }
    ensure!(
        exprs.len() >= 10,
        "the dashboard has only {} queries",
        exprs.len()
    );
    let mut names = BTreeSet::new();
    for e in &exprs {
        let mut rest = e.as_str();
        while let Some(i) = rest.find("driftline_") {
            let tail = &rest[i + "driftline_".len()..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    for name in &names {
        // Histograms export name_bucket; the code names the histogram.
        let base = name.strip_suffix("_bucket").unwrap_or(name);
        ensure!(
            src.contains(&format!("\"{base}\"")),
            "the dashboard queries driftline_{name}, which no service exports"
        );
    }
    Ok(())
}
