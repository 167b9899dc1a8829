//! Running commands: echo what runs, fail with the command in the message, and keep child servers
//! in a process group of their own so they can be ended together.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Runs `cmd` to completion with inherited output; a non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    eprintln!("+ {shown}");
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{shown}`"))?;
    check(status, &shown)
}

/// Runs `cmd` and returns its standard output; a non-zero exit is an error.
pub fn output(cmd: &mut Command) -> Result<String> {
    let shown = describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("could not start `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Test counts summed over every `test result:` line a `cargo test` printed, and how long each
/// test binary ran.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TestTotals {
    pub passed: u64,
    pub failed: u64,
    /// Each binary that ran (`unittests src/lib.rs (target/debug/deps/domain-…)`, shortened to
    /// `domain: src/lib.rs`) and its seconds, as cargo reported them.
    pub binaries: Vec<(String, f64)>,
    running: Option<String>,
}

impl TestTotals {
    /// Takes in one line of `cargo test` output: a `Running …` line names the binary, and a
    /// `test result: ok. 3 passed; 0 failed; …; finished in 1.2s` line adds its counts and time.
    pub fn add_line(&mut self, line: &str) {
        let line = line.trim();
        if let Some(binary) = line
            .strip_prefix("Running ")
            .or_else(|| line.strip_prefix("Doc-tests "))
        {
            self.running = Some(short_binary(binary));
            return;
        }
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        if let Some(seconds) = rest
            .rsplit_once("finished in ")
            .and_then(|(_, s)| s.trim_end_matches('s').parse::<f64>().ok())
        {
            let name = self.running.take().unwrap_or_else(|| "?".into());
            self.binaries.push((name, seconds));
        }
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(kind), Some(count)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(count) = count.parse::<u64>() else {
                continue;
            };
            match kind {
                "passed" => self.passed += count,
                "failed" => self.failed += count,
                _ => {}
            }
        }
    }
}

/// Runs a `cargo test` command, passing its output through, and sums its results. A non-zero exit
/// is reported through the totals' failures (or as an error if nothing ran).
/// `unittests src/lib.rs (target/debug/deps/domain-3f…)` -> `domain: src/lib.rs`;
/// `tests/edge.rs (target/debug/deps/edge-9a…)` -> `edge: tests/edge.rs`; a doc-test's crate
/// name stays as it is.
fn short_binary(binary: &str) -> String {
    let binary = binary.trim_start_matches("unittests ");
    match binary.split_once(" (") {
        Some((source, artifact)) => {
            let file = artifact
                .trim_end_matches(')')
                .rsplit('/')
                .next()
                .unwrap_or("");
            let krate = file.rsplit_once('-').map_or(file, |(name, _)| name);
            format!("{krate}: {source}")
        }
        None => format!("{binary}: doc-tests"),
    }
}

impl TestTotals {
    /// The binaries that took a second or more, slowest first, and the sum of all.
    pub fn report(&self) -> String {
        let mut slow: Vec<&(String, f64)> =
            self.binaries.iter().filter(|(_, s)| *s >= 1.0).collect();
        slow.sort_by(|a, b| b.1.total_cmp(&a.1));
        let mut out = String::from("\ntest binaries (a second or more):\n");
        for (name, seconds) in slow {
            out += &format!("  {seconds:>7.1} s  {name}\n");
        }
        let all: f64 = self.binaries.iter().map(|(_, s)| s).sum();
        out += &format!("  {all:>7.1} s  in all, {} binaries\n", self.binaries.len());
        out
    }
}

pub fn run_tests(cmd: &mut Command) -> Result<TestTotals> {
    use std::io::{BufRead, BufReader};
    let shown = describe(cmd);
    eprintln!("+ {shown}");
    // One pipe for both streams, so that cargo's `Running …` lines (on stderr) stay in order with
    // the test binaries' results (on stdout).
    let (reader, writer) = std::io::pipe().context("a pipe for cargo test")?;
    let mut child = cmd
        .stdout(writer.try_clone().context("a pipe for cargo test")?)
        .stderr(writer)
        .spawn()
        .with_context(|| format!("could not start `{shown}`"))?;
    // The command still holds the pipe's write ends: drop them so the reader sees the end.
    drop(std::mem::replace(cmd, Command::new("true")));
    let mut totals = TestTotals::default();
    for line in BufReader::new(reader).lines() {
        let line = line?;
        println!("{line}");
        totals.add_line(&line);
    }
    let status = child.wait()?;
    if !status.success() && totals.failed == 0 {
        bail!("`{shown}` failed ({status}) before reporting a failed test");
    }
    Ok(totals)
}

fn check(status: ExitStatus, shown: &str) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{shown}` failed ({status})")
    }
}

/// The command as a person would type it (program and arguments, not the environment).
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// The last `lines` lines of a log file (empty if it cannot be read).
pub fn file_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A child process that leads its own process group; dropping it ends the whole group (TERM, then
/// KILL after a grace period), so servers it started do not outlive it.
pub struct Group {
    child: Child,
    name: String,
    /// Whether the child leads a group of its own (then the group is signalled, not just it).
    own_group: bool,
    /// A watchdog that ends the group when this process ends ([`Group::end_with_this_process`]).
    watchdog: Option<Child>,
}

impl Group {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Group> {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {name}: `{}`", describe(cmd)))?;
        Ok(Group {
            child,
            name: name.to_owned(),
            own_group: true,
            watchdog: None,
        })
    }

    /// Makes sure the group ends when this process does, however it ends. A group that lives in
    /// a `static` (a fixture shared by a whole test binary) is never dropped: this starts a
    /// small shell that waits on a pipe only we hold, and when the pipe closes (we exited, or
    /// were killed) ends the group as [`Group::stop`] would.
    pub fn end_with_this_process(&mut self) -> Result<()> {
        let pgid = self.child.id();
        let script = format!(
            // dash's `kill` takes no `--`; a negative pid after the signal is the group.
            "read _; kill -TERM -{pgid} 2>/dev/null; sleep 5; kill -KILL -{pgid} 2>/dev/null"
        );
        let mut watchdog = Command::new("sh");
        watchdog
            .args(["-c", &script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        {
            use std::os::unix::process::CommandExt;
            // Not in the group it watches, nor in ours: a Ctrl-C for us must not end it first.
            watchdog.process_group(0);
        }
        let watchdog = watchdog
            .spawn()
            .with_context(|| format!("could not start the watchdog of {}", self.name))?;
        self.watchdog = Some(watchdog);
        Ok(())
    }

    /// Spawns `cmd` in this process's group: a terminal's Ctrl-C reaches it as well as us.
    pub fn spawn_foreground(name: &str, cmd: &mut Command) -> Result<Group> {
        let child = cmd
            .spawn()
            .with_context(|| format!("could not start {name}: `{}`", describe(cmd)))?;
        Ok(Group {
            child,
            name: name.to_owned(),
            own_group: false,
            watchdog: None,
        })
    }

    /// Waits up to `timeout` for the first line the leader prints on its piped stdout (servers
    /// announce where they listen that way). Later lines are appended to `log_file`, so that the
    /// child never blocks on a full pipe.
    pub fn first_line(&mut self, timeout: Duration, log_file: &Path) -> Option<String> {
        let stdout = self.child.stdout.take()?;
        let (tx, rx) = std::sync::mpsc::channel();
        let log_file = log_file.to_path_buf();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            let _ = tx.send(lines.next());
            if let Ok(mut log) = std::fs::File::options().append(true).open(&log_file) {
                for line in lines.map_while(std::result::Result::ok) {
                    let _ = writeln!(log, "{line}");
                }
            }
        });
        rx.recv_timeout(timeout)
            .ok()
            .flatten()
            .and_then(|line| line.ok())
    }

    /// The processes of the group (the leader alone for a foreground group), from `/proc`.
    fn members(&self) -> Vec<(u32, String)> {
        let leader = self.child.id();
        let mut found = Vec::new();
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return found;
        };
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // pid (comm) state ppid pgrp …: comm may hold spaces, so split after its ')'.
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let pgrp = rest
                .split_whitespace()
                .nth(2)
                .and_then(|v| v.parse::<u32>().ok());
            let member = if self.own_group {
                pgrp == Some(leader)
            } else {
                pid == leader
            };
            if member {
                let name = head.split_once('(').map_or("?", |(_, n)| n).to_owned();
                found.push((pid, name));
            }
        }
        found
    }

    /// CPU time (user + system) each process of the group has used so far, by command name.
    pub fn cpu_times(&self) -> Vec<(String, Duration)> {
        let tick = clock_tick();
        self.members()
            .into_iter()
            .filter_map(|(pid, name)| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                // After comm's ')': state is field 3, utime and stime fields 14 and 15.
                let (_, rest) = stat.rsplit_once(')')?;
                let fields: Vec<&str> = rest.split_whitespace().collect();
                let ticks =
                    fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
                Some((name, tick * u32::try_from(ticks).unwrap_or(u32::MAX)))
            })
            .collect()
    }

    /// Resident memory of every process in the group, by command name (largest first).
    pub fn rss(&self) -> Vec<(String, u64)> {
        let mut found: Vec<(String, u64)> = self
            .members()
            .into_iter()
            .map(|(pid, name)| {
                let rss_kib = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|status| {
                        status
                            .lines()
                            .find_map(|line| line.strip_prefix("VmRSS:"))
                            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
                    })
                    .unwrap_or(0);
                (name, rss_kib * 1024)
            })
            .collect();
        found.sort_by_key(|entry| std::cmp::Reverse(entry.1));
        found
    }

    /// The TCP ports the group's processes listen on (IPv4), with the process name.
    pub fn listening_ports(&self) -> Vec<(u16, String)> {
        // Socket inodes per process, then /proc/net/tcp's listening sockets (state 0A) by inode.
        let mut inodes = std::collections::HashMap::new();
        for (pid, name) in self.members() {
            let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
                continue;
            };
            for fd in fds.flatten() {
                if let Ok(target) = std::fs::read_link(fd.path()) {
                    let target = target.to_string_lossy().into_owned();
                    if let Some(inode) = target
                        .strip_prefix("socket:[")
                        .and_then(|t| t.strip_suffix(']'))
                    {
                        inodes.insert(inode.to_owned(), name.clone());
                    }
                }
            }
        }
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        let mut ports: Vec<(u16, String)> = table
            .lines()
            .skip(1)
            .filter_map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
                if *state != "0A" {
                    return None;
                }
                let port = u16::from_str_radix(local.rsplit_once(':')?.1, 16).ok()?;
                Some((port, inodes.get(*inode)?.clone()))
            })
            .collect();
        ports.sort();
        ports.dedup();
        ports
    }

    /// `Some(status)` if the leader has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for the leader to exit on its own.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        self.child
            .wait()
            .with_context(|| format!("waiting for {}", self.name))
    }

    /// Ends the group: TERM, up to `grace` to exit, then KILL.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            // The leader is gone; its group may still hold children.
            self.signal("KILL");
            return;
        }
        self.signal("TERM");
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                self.signal("KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal("KILL");
        let _ = self.child.wait();
    }

    /// Ends the group at once with SIGKILL (a crash: nothing gets to clean up).
    pub fn kill(&mut self) {
        self.signal("KILL");
        let _ = self.child.wait();
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id();
        let target = if self.own_group {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        let _ = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg("--")
            .arg(target)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }
}

/// The length of a `/proc` clock tick (`getconf CLK_TCK`; 10 ms on Linux unless told otherwise).
fn clock_tick() -> Duration {
    static TICK: std::sync::OnceLock<Duration> = std::sync::OnceLock::new();
    *TICK.get_or_init(|| {
        let hz = output(Command::new("getconf").arg("CLK_TCK"))
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .filter(|hz| *hz > 0)
            .unwrap_or(100);
        Duration::from_nanos(1_000_000_000 / hz)
    })
}

#[cfg(test)]
mod tests {
    use super::{Group, TestTotals};
    use std::process::Command;
    use std::time::{Duration, Instant};

    /// The watchdog ends the group once the pipe to it closes, as it does when we exit: here the
    /// pipe is closed by hand, and the group (a shell and its child) is gone within the grace.
    #[test]
    fn the_watchdog_ends_the_group_when_we_are_gone() {
        let mut group = Group::spawn(
            "a sleeper",
            Command::new("sh").args(["-c", "sleep 60 & wait"]),
        )
        .expect("spawn");
        group.end_with_this_process().expect("watchdog");
        let leader = group.child.id();
        drop(group.watchdog.as_mut().and_then(|w| w.stdin.take()));
        let deadline = Instant::now() + Duration::from_secs(10);
        let alive = || {
            // `kill -0 -PGID` succeeds while any process of the group is left.
            Command::new("kill")
                .args(["-0", "--", &format!("-{leader}")])
                .stderr(std::process::Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        };
        // Until the leader has exited and been reaped, and whatever else was in its group (the
        // `sleep`, reaped by whoever adopted it) is gone.
        while (group.exited().is_none() || alive()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(group.exited().is_some(), "the leader still runs");
        assert!(!alive(), "a process of the group outlived the watchdog");
    }

    #[test]
    fn sums_cargo_test_lines_and_times_each_binary() {
        let mut totals = TestTotals::default();
        totals.add_line("     Running unittests src/lib.rs (target/debug/deps/domain-3f2a9c)");
        totals.add_line("test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s");
        totals.add_line("     Running tests/edge.rs (target/debug/deps/edge-9a0b)");
        totals.add_line("running 3 tests");
        totals.add_line("test foo ... ok");
        totals.add_line(
            "test result: FAILED. 2 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 75.54s",
        );
        totals.add_line("   Doc-tests lexicon");
        totals
            .add_line("test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out");
        assert_eq!((totals.passed, totals.failed), (5, 1));
        assert_eq!(
            totals.binaries,
            [
                ("domain: src/lib.rs".to_owned(), 0.01),
                ("edge: tests/edge.rs".to_owned(), 75.54)
            ]
        );
        let report = totals.report();
        assert!(report.contains("75.5 s  edge: tests/edge.rs"), "{report}");
        assert!(
            !report.contains("domain"),
            "under a second: left out\n{report}"
        );
        assert!(report.contains("75.6 s  in all, 2 binaries"), "{report}");
    }
}
