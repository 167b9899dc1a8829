//! The backfill (docs/backfill.md) end to end: a local network of 200+ accounts written before
//! the app was deployed, the sidecar listing them as a relay does, `wrangler dev` reading them
//! through the listener's Backfill object while the listener reads the same network live, a stack
//! killed and restarted in the middle, and D1 compared with what the PDS holds (every account's
//! repository, listed in full) once both have caught up: statuses written before, during and
//! after the backfill, deletes among them, and records that are not valid statuses. Then the open
//! network's version: a relay that lists junk and loops, a PDS that lies, is down, then answers
//! with records that are not its own, and accounts that resolve to nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use e2e::backfilling::{
    relay, status, wait_for, wait_for_relay, wake, within_budget, writers, EMOJIS, STATUS,
};
use e2e::hostile::{cid_of, tid, Hostile, Misbehaviour};
use e2e::pds::{all_records, Writer};
use e2e::tables::Tables;
use e2e::web::page_text;
use futures_util::{stream, StreamExt, TryStreamExt};
use serde_json::json;
use xtask::devnet::{Devnet, DevnetConfig};
use xtask::stack::{Stack, StackConfig};
use xtask::toolchain::Tools;
use xtask::workers::Worker;

/// Accounts on the network; every 50th writes no status (the relay does not list it).
const ACCOUNTS: usize = 210;
/// The first account's statuses: two pages of `listRecords`.
const MANY: usize = 130;
/// The longest wait for the backfill to get somewhere.
const WITHIN: Duration = Duration::from_secs(180);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_network_written_before_the_deploy_is_read_in_full_across_a_restart() {
    let tools = Tools::ensure().expect("tools");
    xtask::sidecar::build().expect("sidecar");
    let mut devnet_config = DevnetConfig::for_test("backfill").expect("devnet config");
    devnet_config.accounts = (0..ACCOUNTS).map(|i| format!("b{i:03}")).collect();
    let started = Instant::now();
    let devnet =
        tokio::task::block_in_place(|| Devnet::start(&tools, &devnet_config)).expect("devnet");
    eprintln!("{ACCOUNTS} accounts in {:?}", started.elapsed());
    let writers = writers(&devnet).await.expect("sessions");
    let before = write_before(&writers).await.expect("statuses before");
    eprintln!("statuses written in {:?}", started.elapsed());

    let dir = e2e::listening::run_dir("backfill").expect("run dir");
    let (sidecar, relay) = relay(&devnet, &dir).expect("sidecar");
    wait_for_relay(&relay, before).await.expect("relay");

    let config = StackConfig::for_test("backfill")
        .expect("config")
        .with_var(Worker::Listener, "JETSTREAM_URLS", &sidecar.url)
        .with_var(Worker::Listener, "MODE", "live")
        .with_local_sign_in(&devnet.plc_url, &devnet.pds_url)
        .with_backfill(&relay, 50);
    let mut stack = e2e::listening::start(config.clone()).await.expect("stack");
    let result = async {
        // Killed in the middle: what was recorded stays, the rest is read after the restart.
        let progress = wait_for(&stack, "40 accounts read", WITHIN, |p| {
            p["done"].as_u64() >= Some(40)
        })
        .await?;
        ensure!(
            progress["jetstream_from_us"].as_i64().is_some(),
            "the backfill read before the listener had a position: {progress}"
        );
        write_during(&writers).await?;
        tokio::task::block_in_place(|| stack.restart(&tools, config.clone()))?;
        wake(&stack).await?;
        let progress = wait_for(&stack, "the backfill done", WITHIN, |p| {
            p["phase"] == "done"
        })
        .await?;
        let listed = (ACCOUNTS - ACCOUNTS / 50) as u64;
        ensure!(
            progress["listed"].as_u64() == Some(listed)
                && progress["done"].as_u64() == Some(listed)
                && progress["failed"].as_u64() == Some(0)
                && progress["pending"].as_u64() == Some(0),
            "not every listed account was read once: {progress}"
        );
        ensure!(
            progress["dropped"].as_u64() >= Some(2),
            "the invalid records were not counted: {progress}"
        );
        let (invocations, subrequests) = within_budget(&progress, 50)?;
        eprintln!(
            "backfill of {listed} accounts: {invocations} invocations, {subrequests} subrequests, \
             {} D1 rows written, {} ms",
            progress["rows_written"],
            progress["finished_ms"].as_i64().unwrap_or(0)
                - progress["started_ms"].as_i64().unwrap_or(0)
        );
        let after = write_after(&writers).await?;
        // The listener has everything once the last write is in D1.
        wait_for_status(&stack, &after).await?;
        same_as_the_network(&stack, &devnet, &writers).await?;

        // The first page of the deploy shows the network's statuses (the newest are the first
        // account's 130), by handle, with names, and counts over every account.
        let home = reqwest::get(stack.base_url()).await?.text().await?;
        let text = page_text(&home);
        let top = format!("Top statuses {}", top_counts(&stack).await?);
        ensure!(
            text.contains("Person 0 @b000.test is feeling") && text.contains(&top),
            "the first page does not show the backfilled network ({top}): {text}"
        );
        Ok(())
    }
    .await;
    if let Err(error) = result {
        panic!(
            "{error:#}\n--- wrangler output (tail) ---\n{}",
            stack.log_tail(120)
        );
    }
}

/// The relay is the hostile server: it answers 503 first, then lists, three to a page and looping
/// on its last cursor, junk (not DIDs, a `did:key`), one account twice, two honest accounts of
/// the shared network (uma, vic), itself, a `did:plc` the PLC does not know and a `did:web`
/// nobody serves. As a PDS it claims uma's handle, lies about its latest commit (a revision from
/// the future), is down once, then lists a valid status, two invalid records and a status of
/// uma's it has no say over, and a display name written as markup.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lying_relay_and_a_failing_pds_hold_back_no_one_else() {
    let devnet = e2e::shared::devnet().expect("devnet");
    let uma = Writer::sign_in(&devnet.pds_url, "uma.test")
        .await
        .expect("uma");
    let vic = Writer::sign_in(&devnet.pds_url, "vic.test")
        .await
        .expect("vic");
    uma.put(STATUS, None, status("🌵"))
        .await
        .expect("uma's status");
    vic.put(STATUS, None, status("🍀"))
        .await
        .expect("vic's status");
    let profile = json!({ "displayName": "Vic" });
    vic.put("app.bsky.actor.profile", Some("self"), profile)
        .await
        .expect("vic's name");

    let hostile = Hostile::start("uma.test").await.expect("hostile");
    let now_us = e2e::now_ms() * 1000;
    hostile.put_record(STATUS, &tid(now_us - 3_000_000, 1), status("🦊"));
    let words = json!({ "status": "two words", "createdAt": status("🦋")["createdAt"] });
    hostile.put_record(STATUS, &tid(now_us - 2_000_000, 1), words);
    hostile.put_record(STATUS, "not-a-tid", status("🦊"));
    let stolen = status("😈");
    hostile.list_as_is(json!({
        "uri": format!("at://{}/{STATUS}/{}", uma.did, tid(now_us, 7)),
        "cid": cid_of(&stolen),
        "value": stolen,
    }));
    let markup = "<img src=x onerror=alert(1)>";
    hostile.put_record(
        "app.bsky.actor.profile",
        "self",
        json!({ "displayName": markup }),
    );
    let future = tid(now_us + 86_400_000_000, 1);
    hostile.misbehave_times(
        "/xrpc/com.atproto.sync.getLatestCommit",
        Misbehaviour::Json(json!({ "cid": cid_of(&json!(future)), "rev": future })),
        1,
    );
    hostile.misbehave_times(
        "/xrpc/com.atproto.repo.listRecords",
        Misbehaviour::Status(503),
        1,
    );
    hostile.misbehave_times(
        "/xrpc/com.atproto.sync.listReposByCollection",
        Misbehaviour::Status(503),
        1,
    );
    let unknown = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    let unserved = "did:web:localhost%3A9";
    hostile.list_repos(vec![
        json!({ "did": "not a did" }),
        json!({ "did": uma.did }),
        json!(42),
        json!({ "did": hostile.did }),
        json!({ "did": unknown }),
        json!({ "did": vic.did }),
        json!({ "did": uma.did }),
        json!({ "did": unserved }),
        json!({ "did": "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK" }),
    ]);

    let net = tokio::task::block_in_place(|| {
        e2e::web::start_with_replay_and(
            "backfill-hostile",
            |_| Vec::new(),
            |config| {
                config
                    .with_backfill(&hostile.url, 50)
                    .with_var(Worker::Backfill, "BACKFILL_RETRY_SECONDS", "1")
                    .with_var(Worker::Backfill, "BACKFILL_ATTEMPTS", "4")
            },
        )
    })
    .expect("stack");
    let stack = &net.stack;
    let result = async {
        wake(stack).await?;
        let progress = wait_for(stack, "every listed account settled", WITHIN, |p| {
            p["phase"] == "done"
        })
        .await?;
        ensure!(
            progress["listed"].as_u64() == Some(5)
                && progress["done"].as_u64() == Some(3)
                && progress["failed"].as_u64() == Some(2)
                && progress["retrying"].as_u64() == Some(0)
                && progress["pending"].as_u64() == Some(0),
            "not read: the honest and the recovered accounts, given up: the two that resolve \
             to nothing: {progress}"
        );
        ensure!(
            progress["dropped"].as_u64() == Some(3),
            "the hostile records were not all dropped: {progress}"
        );
        let last_error = progress["last_error"].as_str().unwrap_or_default();
        ensure!(
            last_error.contains(unknown) || last_error.contains(unserved),
            "the give-up is not reported: {progress}"
        );
        within_budget(&progress, 50)?;

        let rows: BTreeMap<String, (String, i64)> =
            Tables::query(stack, "SELECT did, state, attempts FROM backfill_repo")
                .await?
                .into_iter()
                .map(|r| {
                    let did = r["did"].as_str().unwrap_or_default().to_owned();
                    let state = r["state"].as_str().unwrap_or_default().to_owned();
                    (did, (state, r["attempts"].as_i64().unwrap_or(-1)))
                })
                .collect();
        let expected: BTreeMap<String, (String, i64)> = [
            (uma.did.clone(), ("done".to_owned(), 0)),
            (vic.did.clone(), ("done".to_owned(), 0)),
            // Its commit from the future, then its 503: read at the third try.
            (hostile.did.clone(), ("done".to_owned(), 2)),
            (unknown.to_owned(), ("failed".to_owned(), 4)),
            (unserved.to_owned(), ("failed".to_owned(), 4)),
        ]
        .into_iter()
        .collect();
        ensure!(rows == expected, "the accounts' progress: {rows:?}");

        // D1 holds what each repository holds, and nothing the liar said about uma.
        let stored: BTreeSet<(String, String)> = Tables::query(
            stack,
            "SELECT author_did, status FROM status WHERE deleted = 0",
        )
        .await?
        .into_iter()
        .map(|r| {
            let did = r["author_did"].as_str().unwrap_or_default().to_owned();
            (did, r["status"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
        let expected: BTreeSet<(String, String)> = [
            (uma.did.clone(), "🌵".to_owned()),
            (vic.did.clone(), "🍀".to_owned()),
            (hostile.did.clone(), "🦊".to_owned()),
        ]
        .into_iter()
        .collect();
        ensure!(stored == expected, "D1 is not the repositories: {stored:?}");

        // The handle the hostile server claims stays uma's; the names are as written.
        let handles = Tables::query(stack, "SELECT did, handle FROM account").await?;
        let handle_of = |did: &str| {
            handles
                .iter()
                .find(|r| r["did"] == did)
                .and_then(|r| r["handle"].as_str().map(str::to_owned))
        };
        ensure!(
            handle_of(&uma.did).as_deref() == Some("uma.test")
                && handle_of(&vic.did).as_deref() == Some("vic.test")
                && handle_of(&hostile.did).is_none(),
            "handles: {handles:?}"
        );
        let home = reqwest::get(stack.base_url()).await?.text().await?;
        ensure!(
            !home.contains(markup) && home.contains("img src=x onerror=alert(1)"),
            "the hostile name is not shown as text: {home}"
        );
        ensure!(
            page_text(&home).contains("Vic @vic.test is feeling 🍀"),
            "vic's line: {}",
            page_text(&home)
        );
        Ok(())
    }
    .await;
    if let Err(error) = result {
        panic!(
            "{error:#}\n--- wrangler output (tail) ---\n{}",
            stack.log_tail(120)
        );
    }
}

/// The top five counts as the page shows them (`🎉 68 🚀 64 …`).
async fn top_counts(stack: &Stack) -> Result<String> {
    let rows = Tables::query(
        stack,
        "SELECT status, count FROM status_count WHERE count > 0 ORDER BY count DESC, status LIMIT 5",
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| format!("{} {}", r["status"].as_str().unwrap_or(""), r["count"]))
        .collect::<Vec<_>>()
        .join(" "))
}

/// Before the deploy: a status for most accounts, a second for every third, a display name for
/// every tenth, two pages for the first, records that are not valid statuses, and a status
/// written then deleted. Returns how many accounts have statuses.
async fn write_before(writers: &[Writer]) -> Result<usize> {
    stream::iter(writers.iter().enumerate())
        .map(|(i, w)| async move {
            if i % 50 == 49 {
                return Ok(());
            }
            w.put(STATUS, None, status(EMOJIS[i % EMOJIS.len()]))
                .await?;
            if i % 3 == 0 {
                w.put(STATUS, None, status(EMOJIS[(i + 1) % EMOJIS.len()]))
                    .await?;
            }
            if i % 10 == 0 {
                let profile = json!({ "displayName": format!("Person {i}") });
                w.put("app.bsky.actor.profile", Some("self"), profile)
                    .await?;
            }
            match i {
                0 => {
                    for n in 0..MANY {
                        w.put(STATUS, None, status(EMOJIS[n % EMOJIS.len()]))
                            .await?;
                    }
                }
                1 => {
                    let bad =
                        json!({ "status": "two words", "createdAt": status("🦋")["createdAt"] });
                    w.put(STATUS, None, bad).await?;
                    w.put(STATUS, None, json!({ "status": "🦋" })).await?;
                }
                2 => {
                    let gone = w.put(STATUS, None, status("💀")).await?;
                    w.delete(&gone).await?;
                }
                _ => {}
            }
            anyhow::Ok(())
        })
        .buffer_unordered(8)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(writers.len() - writers.len() / 50)
}

/// While the backfill runs: new statuses, one deleted, on accounts read and not yet read.
async fn write_during(writers: &[Writer]) -> Result<()> {
    for i in [4, 5, 150, 151, 200] {
        writers[i].put(STATUS, None, status("🔥")).await?;
    }
    let gone = writers[160].put(STATUS, None, status("👻")).await?;
    writers[160].delete(&gone).await?;
    Ok(())
}

/// After it: one more status; returns its URI.
async fn write_after(writers: &[Writer]) -> Result<String> {
    writers[7].put(STATUS, None, status("🌙")).await
}

/// Waits until D1 has the status at `uri`.
async fn wait_for_status(stack: &Stack, uri: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rows = Tables::query(
            stack,
            &format!("SELECT uri FROM status WHERE uri = '{uri}' AND deleted = 0"),
        )
        .await?;
        if !rows.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{uri} never reached D1");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// D1 against the network: every valid status each repository holds, and no other; each
/// account's current status its newest; handles and display names.
async fn same_as_the_network(stack: &Stack, devnet: &Devnet, writers: &[Writer]) -> Result<()> {
    let mut network: BTreeMap<String, String> = BTreeMap::new();
    let mut newest: BTreeMap<String, String> = BTreeMap::new();
    for w in writers {
        let records = all_records(&devnet.pds_url, &w.did, STATUS).await?;
        for record in &records {
            let valid = lexicon::StatusRecord::from_json(&record["value"].to_string()).is_ok();
            if !valid {
                continue;
            }
            let uri = record["uri"].as_str().context("uri")?.to_owned();
            let emoji = record["value"]["status"]
                .as_str()
                .context("status")?
                .to_owned();
            newest.entry(w.did.clone()).or_insert_with(|| emoji.clone());
            network.insert(uri, emoji);
        }
    }
    let stored = text_pairs(
        stack,
        "SELECT uri AS k, status AS v FROM status WHERE deleted = 0",
    )
    .await?;
    let missing: Vec<_> = network
        .keys()
        .filter(|u| !stored.contains_key(*u))
        .collect();
    let extra: Vec<_> = stored
        .keys()
        .filter(|u| !network.contains_key(*u))
        .collect();
    ensure!(
        missing.is_empty() && extra.is_empty(),
        "D1 is not the network: {} missing {missing:?}, {} extra {extra:?}",
        missing.len(),
        extra.len()
    );
    ensure!(network == stored, "a status differs");
    let current = text_pairs(
        stack,
        "SELECT author_did AS k, status AS v FROM current_status",
    )
    .await?;
    ensure!(
        current == newest,
        "current statuses differ: {current:?} vs {newest:?}"
    );
    let counts: BTreeMap<String, i64> = Tables::query(
        stack,
        "SELECT status, count FROM status_count WHERE count > 0",
    )
    .await?
    .into_iter()
    .map(|r| {
        (
            r["status"].as_str().unwrap_or_default().to_owned(),
            r["count"].as_i64().unwrap_or(0),
        )
    })
    .collect();
    let mut expected: BTreeMap<String, i64> = BTreeMap::new();
    for emoji in newest.values() {
        *expected.entry(emoji.clone()).or_default() += 1;
    }
    ensure!(
        counts == expected,
        "counts differ: {counts:?} vs {expected:?}"
    );
    let handles: BTreeSet<String> =
        Tables::query(stack, "SELECT handle FROM account WHERE handle IS NOT NULL")
            .await?
            .into_iter()
            .filter_map(|r| r["handle"].as_str().map(str::to_owned))
            .collect();
    let authors = newest.len();
    ensure!(
        handles.len() >= authors,
        "{} handles for {authors} authors",
        handles.len()
    );
    let names = Tables::query(
        stack,
        "SELECT display_name FROM profile WHERE display_name IS NOT NULL",
    )
    .await?;
    ensure!(
        names.len() == ACCOUNTS / 10,
        "{} display names, not {}",
        names.len(),
        ACCOUNTS / 10
    );
    Ok(())
}

/// The rows of `sql` (text columns `k` and `v`) as a map from `k` to `v`.
async fn text_pairs(stack: &Stack, sql: &str) -> Result<BTreeMap<String, String>> {
    Ok(Tables::query(stack, sql)
        .await?
        .into_iter()
        .map(|row| {
            let text = |key: &str| row[key].as_str().unwrap_or_default().to_owned();
            (text("k"), text("v"))
        })
        .collect())
}
