//! The `statusphere-sidecar` binary itself: serve a replay at each pace, generate, record, and
//! refuse bad command lines with a clear message.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_statusphere-sidecar");

/// A sidecar process, terminated on drop.
struct Sidecar {
    child: Child,
    url: String,
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(args: &[&str]) -> Sidecar {
    let mut child = Command::new(BIN)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    Sidecar { child, url }
}

fn temp_file(name: &str, lines: &[String]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sidecar-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

async fn client(url: &str, query: &str) -> Client {
    tokio_tungstenite::connect_async(format!("{url}?{query}"))
        .await
        .unwrap()
        .0
}

/// Frames received until `n` arrived, with the instant each arrived.
async fn collect(ws: &mut Client, n: usize) -> Vec<(String, Instant)> {
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let text = next_text(ws, Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("got {} of {n}", out.len()));
        out.push((text, Instant::now()));
    }
    out
}

fn paced_lines() -> Vec<String> {
    (0..5)
        .map(|i| {
            commit(
                "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
                1_000_000 + i * 200_000,
                STATUS,
                &format!("k{i}"),
            )
        })
        .collect()
}

#[tokio::test]
async fn replay_at_max_pace_serves_every_line_verbatim_in_order() {
    let mut lines = paced_lines();
    lines.insert(2, "this line is not JSON".to_owned());
    let path = temp_file("max.jsonl", &lines);
    let sidecar = spawn(&[
        "--replay",
        path.to_str().unwrap(),
        "--pace",
        "max",
        "--time",
        "keep",
    ]);
    let mut ws = client(&sidecar.url, "cursor=0").await;
    let got: Vec<String> = collect(&mut ws, lines.len())
        .await
        .into_iter()
        .map(|(t, _)| without_cursor(&t))
        .collect();
    assert_eq!(got, lines, "verbatim but for the seq each event is given");
}

#[tokio::test]
async fn recorded_pace_keeps_the_gaps_and_a_speed_factor_shrinks_them() {
    let path = temp_file("paced.jsonl", &paced_lines());
    // Recorded gaps are 200 ms: five frames span 800 ms.
    let sidecar = spawn(&["--replay", path.to_str().unwrap(), "--pace", "recorded"]);
    let mut ws = client(&sidecar.url, "cursor=0").await;
    let got = collect(&mut ws, 5).await;
    let span = got[4].1 - got[0].1;
    assert!(
        span >= Duration::from_millis(600),
        "recorded pace spanned {span:?}"
    );
    // Served times are emission times (Jetstream's rule), strictly increasing.
    let times: Vec<i64> = got
        .iter()
        .map(|(t, _)| {
            serde_json::from_str::<serde_json::Value>(t).unwrap()["time_us"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert!(
        times.windows(2).all(|w| w[1] - w[0] >= 150_000),
        "{times:?}"
    );

    let sidecar = spawn(&["--replay", path.to_str().unwrap(), "--pace", "x8"]);
    let mut ws = client(&sidecar.url, "cursor=0").await;
    let got = collect(&mut ws, 5).await;
    let span = got[4].1 - got[0].1;
    assert!(
        span < Duration::from_millis(500),
        "x8 pace spanned {span:?}"
    );
}

#[tokio::test]
async fn generate_is_deterministic_and_serve_generate_matches_it() {
    let run = |seed: &str| {
        let out = Command::new(BIN)
            .args([
                "generate",
                "--seed",
                seed,
                "--accounts",
                "5",
                "--events",
                "300",
                "--malformed-share",
                "0.1",
            ])
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap()
    };
    let a = run("5");
    assert_eq!(a, run("5"));
    assert_ne!(a, run("6"));
    assert_eq!(a.lines().count(), 300);

    let sidecar = spawn(&[
        "--generate",
        "--seed",
        "5",
        "--accounts",
        "5",
        "--events",
        "300",
        "--malformed-share",
        "0.1",
        "--time",
        "keep",
    ]);
    let mut ws = client(&sidecar.url, "cursor=0").await;
    let served: Vec<String> = collect(&mut ws, 300)
        .await
        .into_iter()
        .map(|(t, _)| without_cursor(&t))
        .collect();
    assert_eq!(served, a.lines().map(str::to_owned).collect::<Vec<_>>());
}

#[tokio::test]
async fn record_captures_what_a_jetstream_serves() {
    let sidecar = spawn(&["--generate", "--seed", "3", "--events", "250"]);
    let mut ws = client(&sidecar.url, "cursor=0").await;
    let served: Vec<String> = collect(&mut ws, 250)
        .await
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    let out = std::env::temp_dir().join(format!("sidecar-record-{}.jsonl", std::process::id()));
    let url = format!("{}?cursor=0", sidecar.url);
    let status = Command::new(BIN)
        .args([
            "record",
            "--url",
            &url,
            "--limit",
            "250",
            "--out",
            out.to_str().unwrap(),
        ])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let recorded: Vec<String> = std::fs::read_to_string(&out)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(recorded, served);
    let _ = std::fs::remove_file(out);
}

#[test]
fn bad_command_lines_fail_with_a_message() {
    let out = Command::new(BIN)
        .args(["serve", "--pace", "warp"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--pace"));
    let out = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--replay",
            "/nonexistent/replay.jsonl",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("reading /nonexistent/replay.jsonl"));
    let out = Command::new(BIN)
        .args(["record", "--url", "ws://127.0.0.1:1/subscribe"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error:"));
}

#[test]
fn sigterm_stops_the_server() {
    let mut sidecar = spawn(&[]);
    let pid = sidecar.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if let Some(status) = sidecar.child.try_wait().unwrap() {
            assert!(status.success(), "{status:?}");
            break;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `--help`, alone or after any command, prints the usage to stdout and nothing on stderr.
#[test]
fn help_is_clean_everywhere() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["serve", "--replay", "x.jsonl", "-h"],
        &["generate", "--help"],
        &["record", "--help"],
        &["bench-client", "--help"],
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} wrote to stderr: {stderr}");
        assert!(
            stdout.starts_with("statusphere-sidecar: a local Jetstream")
                && stdout.contains("FAULTS"),
            "{args:?}: {stdout}"
        );
    }
}
