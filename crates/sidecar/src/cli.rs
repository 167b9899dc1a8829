//! The command line: `serve`, `generate`, `record`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::fault::Faults;
use crate::frame::TimeMode;
use crate::load::LoadConfig;
use crate::record::RecordConfig;
use crate::source::firehose::FirehoseConfig;
use crate::source::generate::GenerateConfig;
use crate::source::replay::Pace;
use crate::window::WindowConfig;

pub const USAGE: &str = "\
statusphere-sidecar: a local Jetstream (docs/sidecar.md)

USAGE:
  statusphere-sidecar serve [--listen ADDR] [SOURCE] [OPTIONS] [FAULTS]
  statusphere-sidecar generate [GENERATOR] [--out FILE]
  statusphere-sidecar record --url URL [--out FILE] [--limit N] [--duration-secs N]
  statusphere-sidecar bench-client --url URL --clients N --events M
  statusphere-sidecar --version | --help      (--help also works after a command)

serve: serves a Jetstream v2 instance's two streams on 127.0.0.1 from one source: /subscribe
(the v1 JSON, each event's seq as `cursor`) and /xrpc/network.bsky.jetstream.subscribeEvents
(the v2 framing). `cursor=` below 1e15 is a seq, above a time in unix µs.

  SOURCE (one; none serves an empty, live stream):
  --replay FILE              JSON lines, one Jetstream frame per line
  --generate                 a seeded synthetic stream (see GENERATOR)
  --firehose URL             bridge ws://PDS:PORT's com.atproto.sync.subscribeRepos
  --firehose-cursor N        firehose sequence to start after (default 0: all the PDS still holds)

  OPTIONS:
  --listen ADDR              default 127.0.0.1:6008 (port 0 picks a free one; the URL is printed)
  --pace recorded|max|xN     replay pace (default: recorded for --replay, max for --generate)
  --time now|keep            time_us = emission time (default, like Jetstream) or as recorded
  --window-events N          retained events for cursor replay (default 500000)
  --window-secs N            retained age, relative to the newest event (default 129600 = 36 h)
  --first-seq N              the first event's seq (default 1); another value, another instance
  --write-timeout-ms N       a subscriber that cannot take a write this long is dropped (default 10000)
  --ping-secs N              ping idle subscribers (default 30)

  FAULTS (per connection; see docs/sidecar.md):
  --stall-after N            stop sending after N frames, keep the socket open
  --close-after N            close after N frames: abruptly, or with --close-code CODE
  --close-code CODE          the close frame's code (1000-1003, 1007-1011, 3000-4999)
  --delay-ms N               wait before every frame
  --duplicate-every N        send every Nth frame twice
  --reorder-window N         reverse the order within windows of N frames
  --truncate-every N         cut every Nth frame in half
  --binary-every N           send a binary copy before every Nth frame
  --faults-for N             only the first N connections misbehave

generate: writes a seeded synthetic replay (JSON lines) to --out FILE or stdout.

  GENERATOR (also for serve --generate):
  --seed N                   the random seed (default 1): the same seed, the same stream
  --accounts N               distinct accounts (default 100)
  --events N                 events to make (default 10000)
  --malformed-share F        share of hostile or broken frames mixed in, 0 to 1 (default 0)
  --out FILE                 where to write (default stdout)

record: saves what a Jetstream (ws:// or wss://) serves, as a replay.
  --url URL                  the /subscribe URL (the v1 JSON a replay holds), with its query
  --out FILE                 where to write (default stdout)
  --limit N                  stop after N frames
  --duration-secs N          stop after N seconds

bench-client: N clients read M events each from a Jetstream; prints a JSON report.
  --url URL                  the /subscribe URL
  --clients N                concurrent clients (at least 1)
  --events M                 events each client reads (at least 1)
";

#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    Empty,
    Replay(PathBuf),
    Generate(GenerateConfig),
    Firehose(FirehoseConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ServeArgs {
    pub listen: SocketAddr,
    pub source: Source,
    pub pace: Pace,
    pub time: TimeMode,
    pub window: WindowConfig,
    pub write_timeout: Duration,
    pub ping_interval: Duration,
    pub faults: Faults,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Serve(Box<ServeArgs>),
    Generate {
        config: GenerateConfig,
        out: Option<PathBuf>,
    },
    Record(RecordConfig),
    Load(LoadConfig),
    Version,
    Help,
}

impl PartialEq for WindowConfig {
    fn eq(&self, other: &Self) -> bool {
        self.max_events == other.max_events
            && self.max_age_us == other.max_age_us
            && self.first_seq == other.first_seq
    }
}

struct Args {
    items: std::vec::IntoIter<String>,
}

impl Args {
    fn value(&mut self, flag: &str) -> Result<String> {
        self.items
            .next()
            .ok_or_else(|| Error::Usage(format!("{flag} needs a value")))
    }

    fn parsed<T: FromStr>(&mut self, flag: &str) -> Result<T> {
        let value = self.value(flag)?;
        value
            .parse()
            .map_err(|_| Error::Usage(format!("{flag}: cannot use `{value}`")))
    }
}

fn generate_defaults() -> GenerateConfig {
    GenerateConfig {
        seed: 1,
        accounts: 100,
        events: 10_000,
        malformed_share: 0.0,
    }
}

/// Parses the arguments after the program name.
pub fn parse(args: Vec<String>) -> Result<Command> {
    let mut args = Args {
        items: args.into_iter(),
    };
    let Some(command) = args.items.next() else {
        return Ok(Command::Help);
    };
    // `serve --help` (or any command's) is a question, not a mistake.
    if args
        .items
        .as_slice()
        .iter()
        .any(|a| a == "--help" || a == "-h")
    {
        return Ok(Command::Help);
    }
    match command.as_str() {
        "--version" | "-V" => Ok(Command::Version),
        "--help" | "-h" | "help" => Ok(Command::Help),
        "serve" => parse_serve(args).map(|s| Command::Serve(Box::new(s))),
        "generate" => {
            let mut config = generate_defaults();
            let mut out = None;
            while let Some(flag) = args.items.next() {
                if !generate_flag(&mut args, &flag, &mut config)? {
                    match flag.as_str() {
                        "--out" => out = Some(PathBuf::from(args.value(&flag)?)),
                        _ => {
                            return Err(Error::Usage(format!("generate: unknown argument {flag}")))
                        }
                    }
                }
            }
            config.validate()?;
            Ok(Command::Generate { config, out })
        }
        "record" => {
            let mut config = RecordConfig {
                url: String::new(),
                out: None,
                limit: None,
                duration: None,
            };
            while let Some(flag) = args.items.next() {
                match flag.as_str() {
                    "--url" => config.url = args.value(&flag)?,
                    "--out" => config.out = Some(PathBuf::from(args.value(&flag)?)),
                    "--limit" => config.limit = Some(args.parsed(&flag)?),
                    "--duration-secs" => {
                        config.duration =
                            Some(Duration::from_secs_f64(args.parsed::<f64>(&flag)?.max(0.0)))
                    }
                    _ => return Err(Error::Usage(format!("record: unknown argument {flag}"))),
                }
            }
            if !(config.url.starts_with("ws://") || config.url.starts_with("wss://")) {
                return Err(Error::Usage(
                    "record: --url ws://… or wss://… is required".into(),
                ));
            }
            Ok(Command::Record(config))
        }
        "bench-client" => {
            let mut config = LoadConfig {
                url: String::new(),
                clients: 1,
                events: 0,
            };
            while let Some(flag) = args.items.next() {
                match flag.as_str() {
                    "--url" => config.url = args.value(&flag)?,
                    "--clients" => config.clients = args.parsed(&flag)?,
                    "--events" => config.events = args.parsed(&flag)?,
                    _ => {
                        return Err(Error::Usage(format!(
                            "bench-client: unknown argument {flag}"
                        )))
                    }
                }
            }
            if config.url.is_empty() || config.clients == 0 || config.events == 0 {
                return Err(Error::Usage(
                    "bench-client: --url, --clients >= 1 and --events >= 1 are required".into(),
                ));
            }
            Ok(Command::Load(config))
        }
        other => Err(Error::Usage(format!("unknown command {other}; see --help"))),
    }
}

/// Handles a generator flag; `false` when the flag is not one.
fn generate_flag(args: &mut Args, flag: &str, config: &mut GenerateConfig) -> Result<bool> {
    match flag {
        "--seed" => config.seed = args.parsed(flag)?,
        "--accounts" => config.accounts = args.parsed(flag)?,
        "--events" => config.events = args.parsed(flag)?,
        "--malformed-share" => config.malformed_share = args.parsed(flag)?,
        _ => return Ok(false),
    }
    Ok(true)
}

fn parse_serve(mut args: Args) -> Result<ServeArgs> {
    let mut listen: SocketAddr = "127.0.0.1:6008"
        .parse()
        .map_err(|_| Error::Usage("default address".into()))?;
    let mut replay = None;
    let mut generate = None::<GenerateConfig>;
    let mut firehose = None;
    let mut firehose_cursor = Some(0);
    let mut pace = None;
    let mut time = TimeMode::Now;
    let mut window = WindowConfig::default();
    let mut write_timeout = Duration::from_secs(10);
    let mut ping_interval = Duration::from_secs(30);
    let mut faults = Faults::default();
    let mut generator = generate_defaults();
    while let Some(flag) = args.items.next() {
        if generate_flag(&mut args, &flag, &mut generator)? {
            continue;
        }
        match flag.as_str() {
            "--listen" => listen = args.parsed(&flag)?,
            "--replay" => replay = Some(PathBuf::from(args.value(&flag)?)),
            "--generate" => generate = Some(generator.clone()),
            "--firehose" => firehose = Some(args.value(&flag)?),
            "--firehose-cursor" => firehose_cursor = Some(args.parsed(&flag)?),
            "--pace" => pace = Some(Pace::parse(&args.value(&flag)?)?),
            "--time" => {
                time = match args.value(&flag)?.as_str() {
                    "now" => TimeMode::Now,
                    "keep" => TimeMode::Keep,
                    other => {
                        return Err(Error::Usage(format!(
                            "--time: expected now or keep, got {other}"
                        )))
                    }
                }
            }
            "--window-events" => window.max_events = args.parsed(&flag)?,
            "--window-secs" => {
                window.max_age_us = args.parsed::<i64>(&flag)?.saturating_mul(1_000_000)
            }
            "--first-seq" => window.first_seq = args.parsed::<u64>(&flag)?.max(1),
            "--write-timeout-ms" => write_timeout = Duration::from_millis(args.parsed(&flag)?),
            "--ping-secs" => ping_interval = Duration::from_secs(args.parsed::<u64>(&flag)?.max(1)),
            "--stall-after" => faults.stall_after = Some(args.parsed(&flag)?),
            "--close-after" => faults.close_after = Some(args.parsed(&flag)?),
            "--close-code" => {
                let code: u16 = args.parsed(&flag)?;
                // Codes a server may put in a close frame (RFC 6455 7.4).
                if !matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999) {
                    return Err(Error::Usage(format!(
                        "--close-code {code} cannot be sent in a close frame"
                    )));
                }
                faults.close_code = Some(code);
            }
            "--delay-ms" => faults.delay = Some(Duration::from_millis(args.parsed(&flag)?)),
            "--duplicate-every" => faults.duplicate_every = Some(args.parsed(&flag)?),
            "--reorder-window" => faults.reorder_window = Some(args.parsed(&flag)?),
            "--truncate-every" => faults.truncate_every = Some(args.parsed(&flag)?),
            "--binary-every" => faults.binary_every = Some(args.parsed(&flag)?),
            "--faults-for" => faults.connections = Some(args.parsed(&flag)?),
            _ => return Err(Error::Usage(format!("serve: unknown argument {flag}"))),
        }
    }
    // Generator flags may come after --generate.
    let generate = generate.map(|_| generator);
    let source = match (replay, generate, firehose) {
        (None, None, None) => Source::Empty,
        (Some(path), None, None) => Source::Replay(path),
        (None, Some(config), None) => {
            config.validate()?;
            Source::Generate(config)
        }
        (None, None, Some(url)) => {
            if time == TimeMode::Keep {
                return Err(Error::Usage(
                    "--firehose events are timed on arrival; --time keep does not apply".into(),
                ));
            }
            crate::source::firehose::subscribe_url(&url, None)?;
            Source::Firehose(FirehoseConfig {
                url,
                cursor: firehose_cursor,
            })
        }
        _ => {
            return Err(Error::Usage(
                "choose one source: --replay, --generate or --firehose".into(),
            ))
        }
    };
    if faults.close_code.is_some() && faults.close_after.is_none() {
        return Err(Error::Usage("--close-code needs --close-after".into()));
    }
    let pace = pace.unwrap_or(match source {
        Source::Generate(_) => Pace::Max,
        _ => Pace::Recorded,
    });
    Ok(ServeArgs {
        listen,
        source,
        pace,
        time,
        window,
        write_timeout,
        ping_interval,
        faults,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn serve_with_replay_and_faults() {
        let Command::Serve(serve) = parse(args("serve --listen 127.0.0.1:0 --replay x.jsonl --pace x4 --close-after 10 --close-code 1011 --faults-for 1")).unwrap() else {
            panic!("not serve");
        };
        assert_eq!(serve.source, Source::Replay("x.jsonl".into()));
        assert_eq!(serve.pace, Pace::Speed(4.0));
        assert_eq!(serve.faults.close_code, Some(1011));
        assert_eq!(serve.faults.connections, Some(1));
    }

    #[test]
    fn generator_flags_in_any_order() {
        let Command::Serve(serve) = parse(args("serve --generate --seed 9 --events 50")).unwrap()
        else {
            panic!("not serve");
        };
        let Source::Generate(config) = &serve.source else {
            panic!("not generate")
        };
        assert_eq!((config.seed, config.events), (9, 50));
        assert_eq!(serve.pace, Pace::Max);
    }

    #[test]
    fn help_after_any_command_is_help() {
        for line in [
            "serve --help",
            "generate -h",
            "record --url ws://x --help",
            "bench-client --help",
            "--help",
            "",
        ] {
            assert_eq!(parse(args(line)).unwrap(), Command::Help, "{line}");
        }
    }

    /// Every flag the parser takes is in the usage with a word on what it does, so a flag added
    /// without saying so fails here.
    #[test]
    fn every_flag_is_explained() {
        let source = include_str!("cli.rs");
        let code = &source[..source.find("#[cfg(test)]").unwrap()];
        let code = code.replace(USAGE, "");
        let mut flags: Vec<&str> = code
            .split('"')
            .filter(|s| {
                s.starts_with("--")
                    && s.len() > 2
                    && s[2..].bytes().all(|b| b.is_ascii_lowercase() || b == b'-')
            })
            .collect();
        flags.sort_unstable();
        flags.dedup();
        assert!(flags.len() > 20, "{flags:?}");
        for flag in flags {
            let explained = USAGE.lines().any(|line| {
                let line = line.trim_start();
                line.starts_with(flag)
                    && line[flag.len()..].starts_with(' ')
                    && line
                        .split("  ")
                        .filter(|part| !part.trim().is_empty())
                        .count()
                        >= 2
            });
            assert!(
                explained || flag == "--version" || flag == "--help",
                "{flag} is not explained in USAGE"
            );
        }
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for line in [
            "serve --replay a --generate",
            "serve --listen nowhere",
            "serve --pace warp",
            "serve --close-code 1005 --close-after 1",
            "serve --close-code 1000",
            "serve --firehose http://x",
            "serve --firehose ws://x --time keep",
            "serve --bogus",
            "generate --accounts 0",
            "generate --malformed-share 2",
            "record",
            "record --url http://x",
            "fly",
        ] {
            assert!(matches!(parse(args(line)), Err(Error::Usage(_))), "{line}");
        }
    }
}
