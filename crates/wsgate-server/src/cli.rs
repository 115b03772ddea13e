//! The command line: `serve`, `token`, `check-config`, `keys`, `reload`.
//!
//! Every command takes `--config FILE`; without it, `./wsgate.toml` if present, else the
//! embedded defaults. Commands print their result on stdout and problems on stderr, and exit
//! 1 on any error (2 for a usage error).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::auth::{self, SecretStore};
use crate::config::{Config, Origin};
use crate::gateway;
use crate::keys;
use crate::reload::Overrides;
use crate::serve;
use crate::store::Store;

#[derive(Debug, Parser)]
#[command(
    name = "wsgate",
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("WSGATE_GIT_COMMIT"), ")"),
    about = "Authentication for WebSockets: a gateway that verifies every connection before the upgrade and for its whole life",
    after_help = "Endpoint kinds: `echo` (authenticated echo), `pubsub` (channels) and `proxy` (forward to an upstream ws:// or wss:// server, which gets X-Wsgate-Sub/-Session/-Claims/-Provider and never a credential).\n\
                  Several nodes: set [cluster] redis_url (one Redis) or redis_cluster (a Redis Cluster's seed nodes), and key_prefix; every node then shares channels, disconnects, revocations, tickets and per-user limits through Redis.\n\
                  Identity providers: [[auth.providers]] (several issuers routed by `iss`, OpenID discovery, claim mapping, RFC 7662 introspection of opaque tokens) beside [auth.jwt]; an endpoint's `require` holds tokens to claims (403 insufficient_scope).\n\
                  Connection events: [events] sends connected/refreshed/closed/revoked to a signed webhook (Standard Webhooks) or a Redis Stream.\n\
                  Tracing: [telemetry] otlp_endpoint exports a span per handshake, refresh, re-check and upstream dial to an OpenTelemetry collector (OTLP/HTTP), joined to the client's W3C traceparent.\n\
                  Reload: SIGHUP (or `wsgate reload`) reads the config again without dropping a socket; a refused file changes nothing and the log says why.\n\
                  Every config key, its default and an example: docs/config.md.\n\
                  Logs go to stderr; set WSGATE_LOG (e.g. `debug`, `wsgate=debug`) to change the level, and WSGATE_LOG_FORMAT=json for one JSON object per line."
)]
pub struct Cli {
    /// Config file (default: ./wsgate.toml if present, else embedded defaults)
    #[arg(long, short, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (default: 127.0.0.1:8080, endpoints /ws and /echo)
    Serve(ServeArgs),
    /// Mint an HMAC-signed JWT that this configuration accepts; prints it alone on stdout
    Token(TokenArgs),
    /// Validate the configuration: a summary and exit 0, or the file, key and problem and exit 1
    CheckConfig,
    /// Manage API keys (stored hashed in `storage.path`)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Make a running server read its config again (as SIGHUP does), through
    /// `POST /api/reload` with the admin key from the variable named by `admin.api_key_env`;
    /// prints the new config generation, or why the new config was refused (exit 1)
    Reload(ReloadArgs),
}

#[derive(Debug, Args)]
pub struct ReloadArgs {
    /// The server's address (default: http:// and the config's `listen`, 127.0.0.1 for 0.0.0.0)
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create a key; prints it alone on stdout, once (it cannot be shown again)
    Create {
        /// Unique name, to find the key again
        #[arg(long)]
        name: String,
        /// Subject the key authenticates as
        #[arg(long)]
        sub: String,
        /// Channel patterns it may subscribe to, comma separated
        #[arg(long, value_delimiter = ',')]
        channels: Vec<String>,
        /// Channel patterns it may publish to, comma separated
        #[arg(long, value_delimiter = ',')]
        publish: Vec<String>,
        /// Lifetime: 90d, 12h, … (default: no expiry)
        #[arg(long, value_parser = parse_duration)]
        expires_in: Option<Duration>,
    },
    /// List keys: id, name, sub, created, last used, expiry (never the key)
    List,
    /// Revoke a key by id or name: new handshakes are refused at once, open sockets close
    /// (`CloseReason::KeyRevoked`)
    Revoke {
        #[arg(value_name = "ID_OR_NAME")]
        key: String,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address, overriding `listen` (port 0 picks a free port, logged at start)
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Enable the demo page (`demo = true`)
    #[arg(long)]
    pub demo: bool,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    /// Subject (`sub` claim)
    #[arg(long)]
    pub sub: String,
    /// Lifetime: 90s, 15m, 1h, 7d (plain numbers are seconds)
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Channel patterns the token may subscribe to, comma separated (`chat:*,user:{sub}`)
    #[arg(long, value_delimiter = ',')]
    pub channels: Vec<String>,
    /// Channel patterns the token may publish to, comma separated
    #[arg(long, value_delimiter = ',')]
    pub publish: Vec<String>,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            let (mut cfg, origin) = Config::load(cli.config.as_deref())?;
            if let Some(listen) = &args.listen
                && let Err(e) = crate::config::check_listen(listen)
            {
                bail!("--listen: {e}");
            }
            // Kept over the file on every reload too.
            let overrides = Overrides {
                listen: args.listen,
                demo: args.demo,
            };
            overrides.apply(&mut cfg);
            let checked = cfg.check(&origin)?;
            serve::serve(cfg, checked, origin, overrides).await
        }
        Command::Reload(args) => {
            let (cfg, _) = Config::load(cli.config.as_deref())?;
            let generation = reload_remote(&cfg, args.url.as_deref()).await?;
            println!("reloaded: config generation {generation}");
            Ok(())
        }
        Command::Token(args) => {
            let (cfg, origin) = Config::load(cli.config.as_deref())?;
            println!("{}", mint(&cfg, &origin, &args).await?);
            Ok(())
        }
        Command::Keys(cmd) => {
            let (cfg, _) = Config::load(cli.config.as_deref())?;
            let store = Store::open(&cfg.storage.path)?;
            keys_command(&store, cmd)
        }
        Command::CheckConfig => {
            let (cfg, origin) = Config::load(cli.config.as_deref())?;
            let built = auth::build(&cfg, &origin, SecretStore::DryRun).await?;
            gateway::startup_checks(&cfg, &origin)?;
            println!("{origin}: ok");
            println!("listen: {}", cfg.listen);
            let sources: Vec<_> = cfg.auth.sources.iter().map(|s| s.as_str()).collect();
            let reject = match cfg.auth.reject {
                wsgate::RejectMode::Http => "http",
                wsgate::RejectMode::Close => "close",
            };
            println!("sources: {} (reject = {reject})", sources.join(", "));
            for line in &built.summary {
                println!("verifier: {line}");
            }
            for ep in &cfg.endpoints {
                println!("endpoint: {} ({})", ep.path, ep.kind.as_str());
            }
            println!("store: {}", cfg.storage.path.display());
            if let Some(events) = &cfg.events {
                let to: Vec<String> = [
                    events.webhook_url.as_ref().map(|u| format!("webhook {u}")),
                    events
                        .redis_stream
                        .as_ref()
                        .map(|s| format!("redis stream {s}")),
                ]
                .into_iter()
                .flatten()
                .collect();
                println!("events: {}", to.join(", "));
            }
            if let Some(t) = &cfg.telemetry {
                println!("telemetry: {} as {:?}", t.traces_url(), t.service_name);
            }
            if let Some((backend, c)) = cfg.cluster_mode() {
                println!(
                    "cluster: {} (key prefix {:?})",
                    crate::cluster::describe_backend(backend),
                    c.key_prefix
                );
            }
            Ok(())
        }
    }
}

/// How long `wsgate reload` waits for the server's answer.
const RELOAD_TIMEOUT: Duration = Duration::from_secs(90);

/// `POST /api/reload` on a running server; its new config generation, or why not.
async fn reload_remote(cfg: &Config, url: Option<&str>) -> anyhow::Result<u64> {
    let key = gateway::admin_key(cfg)?.with_context(|| {
        format!(
            "{} is not set: the admin key is needed to reload",
            cfg.admin.api_key_env
        )
    })?;
    let base = match url {
        Some(u) => u.trim_end_matches('/').to_owned(),
        None => format!("http://{}", local_address(&cfg.listen)),
    };
    let res = reqwest::Client::builder()
        .timeout(RELOAD_TIMEOUT)
        .build()?
        .post(format!("{base}/api/reload"))
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("cannot reach {base}"))?;
    let status = res.status();
    let body: serde_json::Value = res
        .json()
        .await
        .with_context(|| format!("{base}: answered {status} without JSON"))?;
    match body.get("generation").and_then(|g| g.as_u64()) {
        Some(generation) if status.is_success() => Ok(generation),
        _ => bail!(
            "{base}: {status}: {}",
            body.get("message")
                .and_then(|m| m.as_str())
                .unwrap_or("no reason given")
        ),
    }
}

/// The address to reach a server listening on `listen`: a wildcard host means this machine.
fn local_address(listen: &str) -> String {
    match listen.rsplit_once(':') {
        Some(("0.0.0.0", port)) => format!("127.0.0.1:{port}"),
        Some(("[::]", port)) => format!("[::1]:{port}"),
        _ => listen.to_owned(),
    }
}

fn keys_command(store: &Store, cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::Create {
            name,
            sub,
            channels,
            publish,
            expires_in,
        } => {
            if name.is_empty() || sub.is_empty() {
                bail!("--name and --sub must not be empty");
            }
            if name.chars().chain(sub.chars()).any(char::is_control) {
                bail!("--name and --sub must not contain control characters");
            }
            let k = keys::create(store, &name, &sub, &channels, &publish, expires_in)?;
            eprintln!(
                "created key {} (`{name}`, sub `{sub}`); store it now, it is not shown again",
                k.id
            );
            println!("{}", k.key);
        }
        KeysCommand::List => {
            let time = |t: Option<u64>| t.map_or_else(|| "-".to_owned(), utc);
            println!(
                "{:<16}  {:<20}  {:<20}  {:<20}  {:<20}  {:<20}  status",
                "id", "name", "sub", "created", "last used", "expires"
            );
            let now = wsgate::verify::now_unix();
            for k in store.keys()? {
                let status = match (k.revoked, k.expires) {
                    (Some(_), _) => "revoked",
                    (None, Some(e)) if e <= now => "expired",
                    _ => "active",
                };
                println!(
                    "{:<16}  {:<20}  {:<20}  {:<20}  {:<20}  {:<20}  {status}",
                    printable(&k.id),
                    printable(&k.name),
                    printable(&k.sub),
                    utc(k.created),
                    time(k.last_used),
                    time(k.expires)
                );
            }
        }
        KeysCommand::Revoke { key } => {
            if !store.revoke_key(&key)? {
                bail!("no active key with id or name `{key}`");
            }
            eprintln!("revoked `{key}`");
        }
    }
    Ok(())
}

/// `text` with control characters escaped (`\u{1b}`), so a name stored by another program (or
/// an older version) cannot drive the terminal `keys list` prints to.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_unicode().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

async fn mint(cfg: &Config, origin: &Origin, args: &TokenArgs) -> anyhow::Result<String> {
    if args.sub.is_empty() {
        bail!("--sub must not be empty");
    }
    let store = Store::open(&cfg.storage.path)?;
    let built = auth::build(cfg, origin, SecretStore::Open(&store)).await?;
    let Some(m) = built.minting else {
        bail!(
            "{origin}: auth.jwt: minting needs an HMAC secret (HS256/384/512 with `secret`, `secret_env` or the generated one); this configuration has none"
        );
    };
    m.mint(&args.sub, args.ttl, &args.channels, &args.publish)
        .context("signing the token")
}

/// Unix seconds as `2026-11-29 19:14 UTC` (the civil calendar from days since 1970, after
/// Howard Hinnant's `civil_from_days`; no time-zone database needed for UTC).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let (hour, minute) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

const MAX_DURATION_SECS: u64 = 36_500 * 86_400;

/// `90s`, `15m`, `1h`, `7d`, or plain seconds (at most 100 years).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit())
        .map_or((s, ""), |i| s.split_at(i));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 90s, 15m, 1h or 7d"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86400),
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use s, m, h or d)")),
    };
    if secs == 0 {
        return Err("a duration must be greater than zero".into());
    }
    // Added to "now" to make an expiry: anything longer is a typo, and near u64::MAX it
    // would wrap into an already-expired credential.
    if secs > MAX_DURATION_SECS {
        return Err(format!("`{s}` is longer than 100 years (36500d)"));
    }
    Ok(Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("15m"), Ok(Duration::from_secs(900)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(2_592_000)));
        assert!(parse_duration("36500d").is_ok());
        for bad in [
            "",
            "h",
            "1w",
            "0",
            "-1h",
            "1.5h",
            "36501d",
            "18446744073709551615",
            "18446744073709551615d",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn dates_people_can_read() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(utc(1_795_529_054), "2026-11-24 14:04 UTC");
    }

    #[test]
    fn cli_shape() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let c = Cli::try_parse_from([
            "wsgate",
            "token",
            "--config",
            "x.toml",
            "--sub",
            "a",
            "--channels",
            "a,b",
        ])
        .unwrap();
        assert_eq!(c.config.as_deref(), Some(std::path::Path::new("x.toml")));
    }
}
