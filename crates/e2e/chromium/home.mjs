// The home page in a real browser: Debian's Chromium driven by playwright-core, against a
// `wrangler dev` stack signing in on the local PDS. `tests/chromium.rs` starts the network and the
// stack, runs this script with the settings below, and checks the repos afterwards.
//
// What a person does and sees: sign in through their PDS's own pages; set a status with a click
// (JavaScript on: no reload) and watch it arrive in another open page, also without a reload; set
// one with the keyboard alone; set one with JavaScript off (form POST and redirect); read the page
// on a phone; sign out in another tab and be told so. Records written by other apps reach the page through the firehose, the sidecar and
// the listener; hostile strings (a display name with markup and script, a status of `<`) show as
// text. Along the way: no script errors or CSP violations, readable contrast in light and dark,
// a visible focus ring.
//
// Settings (environment): BASE_URL (the app: https://statusphere.internal:<port>, the confidential
// client as deployed, or http://127.0.0.1:<port>), PDS_URL, PASSWORD (the seeded accounts'
// password), CHROMIUM (the browser binary), SHOTS (a folder for screenshots); for an https app,
// APP_SPKI: the base64 SHA-256 of its certificate's public key, the one certificate Chromium
// accepts without a trusted CA, while the app's name is mapped to 127.0.0.1.

import { chromium } from "playwright-core";
import { mkdirSync } from "node:fs";
import { join } from "node:path";

const { BASE_URL, PDS_URL, PASSWORD, CHROMIUM, SHOTS, APP_SPKI } = process.env;
for (const [name, value] of Object.entries({ BASE_URL, PDS_URL, PASSWORD, CHROMIUM, SHOTS })) {
  if (!value) throw new Error(`${name} is not set`);
}
mkdirSync(SHOTS, { recursive: true });
const HOME = `${BASE_URL}/`;
const TIMEOUT = 15_000;

function check(ok, what) {
  if (!ok) throw new Error(`check failed: ${what}`);
}

// Console errors and uncaught exceptions on the app's own pages (a CSP violation is one). Chromium
// also logs a fetch answered with an error status; a step that expects one says so here.
const problems = [];
let expectedRefusal = null;
function watch(page, who) {
  page.on("console", (m) => {
    const expected = expectedRefusal && m.text().includes(`status of ${expectedRefusal}`);
    if (m.type() === "error" && page.url().startsWith(BASE_URL) && !expected) {
      problems.push(`${who}: console error: ${m.text()}`);
    }
  });
  page.on("pageerror", (e) => problems.push(`${who}: uncaught: ${e.message}`));
}

async function step(name, run) {
  const started = Date.now();
  await run();
  console.log(`ok   ${name} (${Date.now() - started} ms)`);
}

const browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // Without the background-networking flags Chromium keeps dialing out of this closed network.
  args: [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    ...appAddress(),
  ],
});

// An https app at a name: the name is found at 127.0.0.1 (its port kept), and its certificate,
// made for this run, is the one accepted by its key, not by trusting a CA for everything.
function appAddress() {
  const url = new URL(BASE_URL);
  if (url.protocol !== "https:") return [];
  if (!APP_SPKI) throw new Error("APP_SPKI is not set for an https BASE_URL");
  return [
    `--host-resolver-rules=MAP ${url.hostname} 127.0.0.1`,
    `--ignore-certificate-errors-spki-list=${APP_SPKI}`,
  ];
}

async function newPage(who, options = {}) {
  const context = await browser.newContext(options);
  context.setDefaultTimeout(TIMEOUT);
  const page = await context.newPage();
  watch(page, who);
  return { context, page };
}

// Runs `act` (a form submission) and waits for the page it redirects to: a fresh GET /.
async function submitted(page, act) {
  const home = page.waitForResponse((r) => r.url() === HOME && r.request().method() === "GET");
  await act();
  await home;
  await page.waitForLoadState("load");
}

const grid = (page, emoji) => page.locator(`#grid button[value="${emoji}"]`);

async function signIn(page, user, name = `${user}.test`) {
  await page.goto(HOME);
  await page.getByLabel("Your handle, DID or server").fill(`${user}.test`);
  await page.getByRole("button", { name: "Sign in" }).click();
  // The PDS's own sign-in page, then its consent page.
  await page.waitForURL((url) => !url.href.startsWith(BASE_URL));
  const username = page.locator("input[name=username]");
  if ((await username.inputValue()) === "") await username.fill(`${user}.test`);
  await page.locator("input[type=password]").fill(PASSWORD);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("button", { name: "Authorize" }).click();
  await page.waitForURL(HOME);
  const who = await page.locator(".session strong").textContent();
  check(who === name, `signed in as ${name}, the page says ${who}`);
}

// Another atproto app writing to someone's repo: the PDS's XRPC with a password session.
async function xrpc(method, body, token) {
  const auth = token ? { authorization: `Bearer ${token}` } : {};
  const response = await fetch(`${PDS_URL}/xrpc/${method}`, {
    method: "POST",
    headers: body === undefined ? auth : { "content-type": "application/json", ...auth },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  if (!response.ok) throw new Error(`${method} answered ${response.status}: ${text}`);
  return text ? JSON.parse(text) : {};
}
async function writeRecord(user, collection, record, rkey) {
  const session = await xrpc("com.atproto.server.createSession", { identifier: `${user}.test`, password: PASSWORD });
  const input = { repo: session.did, collection, record: { $type: collection, ...record } };
  if (rkey) return xrpc("com.atproto.repo.putRecord", { ...input, rkey }, session.accessJwt);
  return xrpc("com.atproto.repo.createRecord", input, session.accessJwt);
}

const HOSTILE_NAME = `"><img src=x onerror="pwned=1"><script>pwned=2</script>&amp;`;

// WCAG contrast of each element's text against the first opaque background behind it.
async function lowContrast(page, selectors) {
  return page.evaluate((selectors) => {
    const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
    const lum = ([r, g, b]) => {
      const f = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
      return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
    };
    const background = (el) => {
      for (; el; el = el.parentElement) {
        const c = rgb(getComputedStyle(el).backgroundColor);
        if (c.length === 3 || (c.length === 4 && c[3] === 1)) return c.slice(0, 3);
      }
      return [255, 255, 255];
    };
    const bad = [];
    for (const selector of selectors) {
      for (const el of document.querySelectorAll(selector)) {
        const fg = lum(rgb(getComputedStyle(el).color).slice(0, 3));
        const bg = lum(background(el));
        const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
        if (ratio < 4.5) bad.push(`${selector} ${ratio.toFixed(2)}:1`);
      }
    }
    return bad;
  }, selectors);
}

const TEXT = ["h1 a", "h2", "label", ".hint", "button", ".count", ".feed a", ".feed li > span:last-child"];

// Alice signs in and picks a status with a click; an open page of a signed-out visitor shows it
// at once, in place.
const alice = await newPage("alice");
const visitor = await newPage("visitor");
await step("alice's display name is hostile markup", () =>
  writeRecord("alice", "app.bsky.actor.profile", { displayName: HOSTILE_NAME }, "self"),
);
await step("alice signs in through her PDS's pages", () => signIn(alice.page, "alice", HOSTILE_NAME));
if (BASE_URL.startsWith("https:")) {
  await step("over https her session cookie is __Host- and Secure, and the page's socket is wss", async () => {
    const cookies = await alice.context.cookies(BASE_URL);
    const session = cookies.find((c) => c.name === "__Host-sid");
    check(session && session.secure && session.httpOnly && session.sameSite === "Lax",
      `a __Host-sid cookie, Secure, HttpOnly, SameSite=Lax: ${JSON.stringify(cookies)}`);
    check(!cookies.some((c) => c.name === "sid"), "no plain sid cookie");
    const socket = alice.page.waitForEvent("websocket");
    await alice.page.reload();
    const url = (await socket).url();
    check(url.startsWith(`wss://${new URL(BASE_URL).host}/`), `the page's socket is ${url}`);
  });
}
await step("her display name shows as text, and nothing ran", async () => {
  check((await alice.page.locator(".session img, .session script").count()) === 0, "no elements injected");
  check(await alice.page.evaluate(() => window.pwned === undefined), "no injected script ran");
});
await step("a visitor's page is open and live", async () => {
  await visitor.page.goto(HOME);
  check(await grid(visitor.page, "💙").isDisabled(), "a signed-out visitor's grid is disabled");
  await visitor.page.evaluate(() => {
    window.stillTheSamePage = true;
  });
  // Give the script a moment to connect (the broker replays from `since` regardless).
  await visitor.page.waitForTimeout(500);
});
await step("alice clicks 💙; her page highlights it without a reload", async () => {
  await alice.page.evaluate(() => {
    window.stillTheSamePage = true;
  });
  await grid(alice.page, "💙").click();
  await alice.page.waitForFunction(
    () => document.querySelector('#grid button[value="💙"]').getAttribute("aria-pressed") === "true",
  );
  // Her own line comes over the socket, like everyone else's.
  await alice.page.waitForFunction(() => {
    const first = document.querySelector("#feed li");
    return first && first.dataset.status === "💙" && first.textContent.includes("@alice.test");
  });
  check(await alice.page.evaluate(() => window.stillTheSamePage === true), "no reload");
});
await step("the visitor sees it arrive without a reload", async () => {
  await visitor.page.waitForFunction(() =>
    Array.from(document.querySelectorAll("#feed li")).some(
      (li) =>
        li.dataset.status === "💙" &&
        li.textContent.replace(/\s+/g, " ").includes("@alice.test is feeling 💙 today"),
    ),
  );
  check(await visitor.page.evaluate(() => window.stillTheSamePage === true), "no reload");
  // Her display name (hostile markup) beside her handle, as text, in its own box.
  const name = await visitor.page.evaluate(() => {
    const li = Array.from(document.querySelectorAll("#feed li")).find((l) => l.dataset.status === "💙");
    const el = li.querySelector(".name");
    return { text: el.textContent, hidden: el.hidden, injected: li.querySelectorAll("img, script").length };
  });
  check(name.text === HOSTILE_NAME && !name.hidden && name.injected === 0, `her name on the live line: ${JSON.stringify(name)}`);
  const count = await visitor.page.locator('#grid .count[data-status="💙"]').textContent();
  check(count.trim() === "1", `the 💙 count went to 1 in place (shows ${count})`);
});
await step("times read in the reader's own zone, live lines too", async () => {
  const fresh = /^today, (just now|\d+ min ago)$/;
  const live = (await visitor.page.locator('#feed li[data-status="💙"] time.when').first().textContent()).trim();
  check(fresh.test(live), `the live line's time: ${live}`);
  const tokyo = await newPage("tokyo", { timezoneId: "Asia/Tokyo" });
  await tokyo.page.goto(HOME);
  const time = tokyo.page.locator('#feed li[data-status="💙"] time.when').first();
  const text = (await time.textContent()).trim();
  // Seen moments ago: "today" in Tokyo too, unless Tokyo's midnight fell in between.
  check(fresh.test(text) || text.startsWith("on "), `the rendered line's time, in Tokyo: ${text}`);
  const title = await time.getAttribute("title");
  check(title && title.includes("GMT+9"), `its full time is Tokyo's: ${title}`);
  await tokyo.context.close();
});
await step("the network confirms it: the listener saw it on the firehose", async () => {
  await visitor.page.waitForFunction(() =>
    Array.from(document.querySelectorAll("#feed li")).some(
      (li) => li.dataset.status === "💙" && !li.classList.contains("pending"),
    ),
  );
});
await step("a status of `<` written by another app arrives live, as text", async () => {
  await writeRecord("bob", "xyz.statusphere.status", { status: "<", createdAt: new Date().toISOString() });
  // The firehose never named bob's handle (no identity event since the network started), so the
  // line first shows his DID.
  await visitor.page.waitForFunction(() =>
    Array.from(document.querySelectorAll("#feed li")).some(
      (li) => li.dataset.status === "<" && li.textContent.replace(/\s+/g, " ").includes("@did:plc:"),
    ),
  );
  check(await visitor.page.evaluate(() => window.stillTheSamePage === true), "no reload");
});
await step("bob's handle is looked up after a page shows his DID, and relabels his line live", async () => {
  // Any page view that showed a DID starts a lookup in the background.
  await alice.page.reload();
  await visitor.page.waitForFunction(() =>
    Array.from(document.querySelectorAll("#feed li")).some(
      (li) => li.dataset.status === "<" && li.textContent.replace(/\s+/g, " ").includes("@bob.test is feeling < today"),
    ),
  );
  check(await visitor.page.evaluate(() => window.stillTheSamePage === true), "no reload");
  // Rendered by the server too: the feed and the "also in use" counts.
  await visitor.page.reload();
  const other = (await visitor.page.locator(".others .glyph").allTextContents()).join(" ");
  check(other.includes("<"), `"<" is among the statuses also in use: ${other}`);
  const first = (await visitor.page.locator("#feed li").first().textContent()).replace(/\s+/g, " ");
  check(first.includes("@bob.test is feeling < today"), `bob's line leads the feed: ${first}`);
});

// A message lost between the broker and a page (forced here: the page's socket goes through a
// relay that drops the first status it carries) leaves a gap in the sequence numbers; the page
// reconnects from the last number it has, and the broker sends it what it missed.
await step("a page that misses a message reconnects from where it was and catches up", async () => {
  const gappy = await newPage("gappy");
  let connections = 0;
  let dropped = null;
  await gappy.page.routeWebSocket(/\/ws(\?|$)/, (ws) => {
    connections += 1;
    const lossy = connections === 1;
    const server = ws.connectToServer();
    server.onMessage((message) => {
      if (lossy && dropped === null && String(message).includes('"status_upserted"')) {
        dropped = JSON.parse(String(message)).seq;
        return;
      }
      ws.send(message);
    });
  });
  await gappy.page.goto(HOME);
  await gappy.page.evaluate(() => {
    window.stillTheSamePage = true;
  });
  await gappy.page.waitForTimeout(500);
  const now = () => new Date().toISOString();
  await writeRecord("bob", "xyz.statusphere.status", { status: "🌈", createdAt: now() });
  await gappy.page.waitForTimeout(300);
  await writeRecord("bob", "xyz.statusphere.status", { status: "🧠", createdAt: now() });
  await gappy.page.waitForFunction(() => {
    const shown = Array.from(document.querySelectorAll("#feed li")).map((li) => li.dataset.status);
    return shown.includes("🌈") && shown.includes("🧠");
  });
  check(dropped !== null, "the relay dropped a status");
  check(connections >= 2, `the page reconnected after the gap (${connections} connections)`);
  check(await gappy.page.evaluate(() => window.stillTheSamePage === true), "no reload");
  await gappy.context.close();
});

// The keyboard alone: Tab reaches the grid with a visible focus ring, Enter sets the status.
await step("alice sets a status with the keyboard", async () => {
  const page = alice.page;
  await page.locator("body").click({ position: { x: 1, y: 1 } });
  let focused = null;
  for (let i = 0; i < 10 && !focused; i++) {
    await page.keyboard.press("Tab");
    focused = await page.evaluate(() => {
      const el = document.activeElement;
      if (!el || !el.matches("#grid .emoji")) return null;
      const style = getComputedStyle(el);
      return { value: el.value, outline: style.outlineStyle, width: style.outlineWidth };
    });
  }
  check(focused, "Tab reached an emoji button");
  check(focused.outline !== "none" && focused.width !== "0px", `focus is visible: ${JSON.stringify(focused)}`);
  await page.keyboard.press("Enter");
  await page.waitForFunction(
    (value) => document.querySelector(`#grid button[value="${value}"]`).getAttribute("aria-pressed") === "true",
    focused.value,
  );
  const still = await page.evaluate(() => document.activeElement && document.activeElement.value);
  check(still === focused.value, `focus stays on the button (${still})`);
});

await step("text contrast is at least 4.5:1 in light and dark", async () => {
  const bad = await lowContrast(alice.page, TEXT);
  check(bad.length === 0, `light: ${bad.join(", ")}`);
  const dark = await newPage("dark", { colorScheme: "dark" });
  await dark.page.goto(HOME);
  const badDark = await lowContrast(dark.page, TEXT);
  check(badDark.length === 0, `dark: ${badDark.join(", ")}`);
  await dark.context.close();
});

// Bob without JavaScript: he signs in (the PDS's pages need script), then uses the app with
// script off; the form posts and the redirect shows the result.
await step("bob, JavaScript off, sets a status by form POST and redirect", async () => {
  const signing = await newPage("bob-signing-in");
  await signIn(signing.page, "bob");
  const bob = await newPage("bob", { javaScriptEnabled: false });
  await bob.context.addCookies(await signing.context.cookies(BASE_URL));
  await bob.page.goto(HOME);
  check((await bob.page.locator(".session strong").textContent()) === "bob.test", "signed in");
  await submitted(bob.page, () => grid(bob.page, "😉").click());
  check((await grid(bob.page, "😉").getAttribute("aria-pressed")) === "true", "😉 is pressed");
  const feed = (await bob.page.locator("#feed").textContent()).replace(/\s+/g, " ");
  check(feed.includes("@bob.test is feeling 😉 today"), `his line is in the feed: ${feed}`);
  const when = (await bob.page.locator('#feed li[data-status="😉"] time.when').first().textContent()).trim();
  check(when === "today", `without script the time is the server's UTC word: ${when}`);
  await bob.page.screenshot({ path: join(SHOTS, "no-script.png"), fullPage: true });
  await signing.context.close();
  await bob.context.close();
});

await step("on a phone the page fits the screen", async () => {
  const phone = await newPage("phone", { viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true });
  await phone.page.goto(HOME);
  const { scroll, inner } = await phone.page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth,
    inner: window.innerWidth,
  }));
  check(scroll <= inner, `no sideways scrolling (content ${scroll}px on a ${inner}px screen)`);
  const box = await grid(phone.page, "💙").boundingBox();
  check(box && box.width >= 44 && box.height >= 44, `emoji buttons are big enough to tap: ${JSON.stringify(box)}`);
  await phone.page.screenshot({ path: join(SHOTS, "phone.png"), fullPage: true });
  await phone.context.close();
});

// Statuses that are valid but try to spoof the page: a lone right-to-left override (one
// grapheme) would reverse the words after it, a letter under fifteen combining marks would paint
// over the lines above and below. Each network string sits in an isolated, clipping box.
await step("a bidi override or a tower of combining marks stays in its own box", async () => {
  const override = "\u202E";
  const tower = "e" + "\u0301".repeat(15);
  for (const status of [override, tower]) {
    await writeRecord("bob", "xyz.statusphere.status", { status, createdAt: new Date().toISOString() });
  }
  const layout = (statuses) =>
    visitor.page.evaluate(([override, tower]) => {
      const lines = Array.from(document.querySelectorAll("#feed li"));
      const reversing = lines.find((li) => li.dataset.status === override);
      const stacked = lines.find((li) => li.dataset.status === tower);
      // In the override's line, "today" (after the status) still reads left to right: its t left
      // of its y.
      const text = reversing.querySelector("time.when").firstChild;
      const at = text.textContent.indexOf("today");
      const left = (i) => {
        const range = document.createRange();
        range.setStart(text, i);
        range.setEnd(text, i + 1);
        return range.getBoundingClientRect().left;
      };
      const boxes = Array.from(stacked.querySelectorAll("bdi")).map((b) => getComputedStyle(b));
      return {
        readsForward: left(at) < left(at + 4),
        isolatedBoxes: boxes.length,
        clipped: boxes.every((b) => b.unicodeBidi === "isolate" && b.overflowY === "clip"),
        lineHeight: stacked.getBoundingClientRect().height,
        normalHeight: lines.find((li) => li.dataset.status === "<").getBoundingClientRect().height,
      };
    }, statuses);
  const arrived = (statuses) =>
    visitor.page.waitForFunction(
      (statuses) => statuses.every((s) => Array.from(document.querySelectorAll("#feed li")).some((li) => li.dataset.status === s)),
      statuses,
    );
  for (const when of ["live", "rendered by the server"]) {
    if (when !== "live") await visitor.page.reload();
    await arrived([override, tower]);
    const seen = await layout([override, tower]);
    check(seen.readsForward, `${when}: the words after an override still read left to right`);
    check(seen.isolatedBoxes >= 2 && seen.clipped, `${when}: the marks are isolated and clipped: ${JSON.stringify(seen)}`);
    check(Math.abs(seen.lineHeight - seen.normalHeight) <= 2, `${when}: the stacked line is as tall as any: ${JSON.stringify(seen)}`);
  }
  await visitor.page.screenshot({ path: join(SHOTS, "spoofing.png"), fullPage: true });
});

// The numbers a page shows: the grid's counts, "also in use" and the top list.
const numbers = (page) =>
  page.evaluate(() => {
    const read = (selector) =>
      Array.from(document.querySelectorAll(selector)).map((el) => `${el.dataset.status}=${el.textContent.trim()}`).join(" ");
    return { grid: read("#grid .count"), others: read("#others-list .count"), top: read("#top .count") };
  });

// Counts come from D1 and are published by whoever changed them, each with its version: a page
// left open through creates, an update, a delete, a deactivation and a reactivation shows, after
// each, the numbers a fresh page shows (the grid, "also in use", the top list).
await step("counts stay true live through writes, updates, deletes, deactivation and reactivation", async () => {
  const live = await newPage("counts-live");
  const fresh = await newPage("counts-fresh");
  await live.page.goto(HOME);
  await live.page.evaluate(() => {
    window.stillTheSamePage = true;
  });
  await live.page.waitForTimeout(500);
  // Read in one go: the page's script redraws "also in use" when counts change.
  const countOf = (page, status) =>
    page.evaluate((status) => {
      const el = Array.from(document.querySelectorAll("#grid .count, #others-list .count")).find(
        (c) => c.dataset.status === status,
      );
      return el ? Number(el.textContent.trim()) : 0;
    }, status);
  await fresh.page.goto(HOME);
  const base = { "🐢": await countOf(fresh.page, "🐢"), "🦀": await countOf(fresh.page, "🦀") };
  const session = await xrpc("com.atproto.server.createSession", { identifier: "carol.test", password: PASSWORD });
  const auth = session.accessJwt;
  const record = (status) => ({ $type: "xyz.statusphere.status", status, createdAt: new Date().toISOString() });
  const put = (rkey, status) =>
    xrpc("com.atproto.repo.putRecord", { repo: session.did, collection: "xyz.statusphere.status", rkey, record: record(status) }, auth);
  const first = "3m2abc2abc2ab";
  const second = "3m2abc2abc2ac";
  const steps = [
    ["carol sets 🐢", () => put(first, "🐢"), { "🐢": 1, "🦀": 0 }],
    ["carol changes it to 🦀", () => put(first, "🦀"), { "🐢": 0, "🦀": 1 }],
    ["carol sets 🐢 again", () => put(second, "🐢"), { "🐢": 1, "🦀": 0 }],
    ["carol deletes it: 🦀 is current again",
      () => xrpc("com.atproto.repo.deleteRecord", { repo: session.did, collection: "xyz.statusphere.status", rkey: second }, auth),
      { "🐢": 0, "🦀": 1 }],
    ["carol deactivates her account", () => xrpc("com.atproto.server.deactivateAccount", {}, auth), { "🐢": 0, "🦀": 0 }],
    ["carol comes back", () => xrpc("com.atproto.server.activateAccount", undefined, auth), { "🐢": 0, "🦀": 1 }],
  ];
  for (const [what, act, plus] of steps) {
    await act();
    const deadline = Date.now() + TIMEOUT;
    let seen = null;
    for (;;) {
      await fresh.page.goto(HOME);
      const turtle = await countOf(fresh.page, "🐢");
      const crab = await countOf(fresh.page, "🦀");
      const want = turtle === base["🐢"] + plus["🐢"] && crab === base["🦀"] + plus["🦀"];
      const reload = await numbers(fresh.page);
      seen = { reload, live: await numbers(live.page), turtle, crab };
      if (want && JSON.stringify(seen.reload) === JSON.stringify(seen.live)) break;
      if (Date.now() > deadline) throw new Error(`${what}: the live page's counts are not a reload's: ${JSON.stringify(seen)}`);
      await live.page.waitForTimeout(250);
    }
  }
  check(await live.page.evaluate(() => window.stillTheSamePage === true), "no reload");
  await live.context.close();
  await fresh.context.close();
});

await step("alice clears her status: it leaves every page at once, and the one before is current again", async () => {
  const page = alice.page;
  await page.reload();
  await visitor.page.reload();
  await visitor.page.evaluate(() => {
    window.stillTheSamePage = true;
  });
  const hers = await page.evaluate(() =>
    Array.from(document.querySelectorAll("#feed li"))
      .filter((li) => li.textContent.includes("@alice.test"))
      .map((li) => ({ uri: li.dataset.uri, status: li.dataset.status })),
  );
  check(hers.length >= 2, `alice has two statuses to go back through: ${JSON.stringify(hers)}`);
  const [latest, before] = hers;
  await page.locator("#clear button").click();
  const gone = (uri) => !Array.from(document.querySelectorAll("#feed li")).some((li) => li.dataset.uri === uri);
  await page.waitForFunction(gone, latest.uri);
  await visitor.page.waitForFunction(gone, latest.uri);
  await page.waitForFunction(
    (status) => document.querySelector(`#grid button[aria-pressed="true"]`)?.value === status,
    before.status,
  );
  check(!(await page.locator("#clear").isHidden()), "her older status can be cleared too");
  // The network's delete comes back through the listener and changes nothing more: the open
  // page's numbers are a reload's.
  const fresh = await newPage("after-clear");
  const deadline = Date.now() + TIMEOUT;
  for (;;) {
    await fresh.page.goto(HOME);
    const [live, reload] = [await numbers(visitor.page), await numbers(fresh.page)];
    const shown = await fresh.page.evaluate((uri) => !!document.querySelector(`#feed li[data-uri="${uri}"]`), latest.uri);
    if (!shown && JSON.stringify(live) === JSON.stringify(reload)) break;
    if (Date.now() > deadline) throw new Error(`after the clear: ${JSON.stringify({ live, reload, shown })}`);
    await fresh.page.waitForTimeout(250);
  }
  check(await visitor.page.evaluate(() => window.stillTheSamePage === true), "no reload");
  await fresh.context.close();
});

await step("signed out in another tab, her page says so when she picks a status", async () => {
  await alice.page.screenshot({ path: join(SHOTS, "signed-in.png"), fullPage: true });
  const other = await newPage("alice-other-tab");
  await other.context.addCookies(await alice.context.cookies(BASE_URL));
  await other.page.goto(HOME);
  await submitted(other.page, () => other.page.getByRole("button", { name: "Sign out" }).click());
  check(await other.page.getByLabel("Your handle, DID or server").isVisible(), "the sign-in form is back");
  await other.context.close();
  expectedRefusal = 401;
  await grid(alice.page, "🙃").click();
  const alert = alice.page.locator("#live-notice[role=alert]");
  await alert.waitFor();
  expectedRefusal = null;
  const said = await alert.textContent();
  check(said.includes("Sign in") && said.includes("Reload"), `the page says why: ${said}`);
  check(await grid(alice.page, "🙃").isDisabled(), "the grid is disabled");
  await alice.page.reload();
  check(await alice.page.getByLabel("Your handle, DID or server").isVisible(), "reloaded: the sign-in form");
});

check(problems.length === 0, `no script errors on the app's pages:\n${problems.join("\n")}`);
await browser.close();
console.log("all browser checks passed");
