// Live updates for the home page (docs/broker.md): one WebSocket to /ws, resumed from the last
// sequence number seen (`since`), pinged every 30 s, reconnected with backoff, reloaded when the
// broker says so. A message the page has seen is skipped; a gap in the sequence makes the page
// reconnect from the last number it has, so the broker sends what is missing (or says reload). Updates are applied in place with textContent only (never as HTML). Picking a
// status posts it with fetch (no reload; the new line arrives over the socket, a refusal shows as
// a message). Without this script the page still works: forms POST and redirect.
(function () {
  "use strict";
  var app = document.getElementById("app");
  if (!app || !window.WebSocket || !document.getElementById("line-template")) return;
  var seq = app.dataset.seq;
  // The broker shard this page is bound to: its sequence numbers are that shard's, so every
  // reconnect names it (a page rendered without one stays on shard 0).
  var shard = app.dataset.shard;
  var viewer = app.dataset.viewer || "";
  var profile = app.dataset.profile || "";
  var feed = document.getElementById("feed");
  var delay = 1000;
  var paused = false;
  var MAX_LINES = 50;

  // Counts as D1 holds them: per status, the count of the highest version seen (the page as
  // rendered, then `counts_changed` messages and write answers; docs/broker.md). Two publishes
  // that arrive out of order cannot undo each other. The grid, "Also in use" and the top list are
  // all drawn from them, in D1's order (most shown first, then by code point).
  var counts = {};
  var picker = Array.prototype.map.call(document.querySelectorAll("#grid .emoji"), function (b) { return b.value; });
  var OTHERS = 20, TOP = 5;
  function know(status, count, version) {
    var known = counts[status];
    if (known && known.version >= version) return false;
    counts[status] = { count: Math.max(0, count), version: version };
    return true;
  }
  Array.prototype.forEach.call(document.querySelectorAll(".count[data-status]"), function (el) {
    know(el.dataset.status, parseInt(el.textContent, 10) || 0, parseInt(el.dataset.version, 10) || 0);
  });
  function byUse(a, b) {
    var d = counts[b].count - counts[a].count;
    if (d) return d;
    var x = Array.from(a), y = Array.from(b);
    for (var i = 0; i < x.length && i < y.length; i++) {
      var c = x[i].codePointAt(0) - y[i].codePointAt(0);
      if (c) return c;
    }
    return x.length - y.length;
  }
  function countEl(status) {
    var el = document.createElement("span");
    el.className = "count";
    el.dataset.status = status;
    return el;
  }
  function glyph(status) {
    var b = document.createElement("bdi");
    b.className = "glyph net";
    b.textContent = status;
    return b;
  }
  function shown(filter, limit) {
    return Object.keys(counts).filter(function (s) { return counts[s].count > 0 && filter(s); }).sort(byUse).slice(0, limit);
  }
  function drawCounts() {
    var others = document.getElementById("others-list");
    if (others) {
      var rest = shown(function (s) { return picker.indexOf(s) < 0; }, OTHERS);
      others.textContent = "";
      rest.forEach(function (s) {
        var span = document.createElement("span");
        span.className = "other";
        span.append(glyph(s), " ", countEl(s));
        others.append(span, " ");
      });
      document.getElementById("others").hidden = rest.length === 0;
    }
    var top = document.getElementById("top");
    if (top) {
      var best = shown(function () { return true; }, TOP);
      top.textContent = "";
      best.forEach(function (s) {
        var li = document.createElement("li");
        li.append(glyph(s), " ", countEl(s));
        top.append(li);
      });
      document.getElementById("top-card").hidden = best.length === 0;
    }
    Array.prototype.forEach.call(document.querySelectorAll(".count[data-status]"), function (el) {
      var known = counts[el.dataset.status] || { count: 0, version: 0 };
      el.textContent = String(known.count);
      el.dataset.version = String(known.version);
    });
    Array.prototype.forEach.call(document.querySelectorAll("#grid .emoji"), function (b) {
      var n = (counts[b.value] || { count: 0 }).count;
      b.setAttribute("aria-label", b.value + ", " + n + (n === 1 ? " person" : " people"));
    });
  }
  function countsChanged(list) {
    var changed = false;
    (list || []).forEach(function (c) {
      if (c && typeof c.status === "string" && typeof c.count === "number" && typeof c.version === "number") {
        changed = know(c.status, c.count, c.version) || changed;
      }
    });
    if (changed) drawCounts();
  }
  function highlight(status) {
    Array.prototype.forEach.call(document.querySelectorAll("#grid .emoji"), function (b) {
      var on = b.value === status;
      b.classList.toggle("current", on);
      b.setAttribute("aria-pressed", on ? "true" : "false");
    });
  }
  // A line for a live update: a copy of the page's own line markup (the <template> the server
  // renders from the same macro as the feed), filled in with textContent and data attributes only.
  var lineTemplate = document.getElementById("line-template");
  function line(s) {
    var li = lineTemplate.content.firstElementChild.cloneNode(true);
    li.dataset.uri = s.uri;
    li.dataset.did = s.author_did;
    li.dataset.status = s.status;
    li.classList.toggle("pending", !s.confirmed);
    li.querySelector(".glyph").textContent = s.status;
    var a = li.querySelector(".author");
    a.href = profile + s.author_did;
    a.textContent = "@" + (s.handle || s.author_did);
    var name = li.querySelector(".name");
    name.textContent = s.display_name || "";
    name.hidden = !s.display_name;
    li.querySelector(".said").textContent = s.status;
    var seen = new Date(s.indexed_at);
    if (!isNaN(seen.getTime())) {
      li.querySelector("time.when").dateTime = seen.toISOString();
      when(li);
    }
    return li;
  }
  // Times in the reader's own zone, redone every minute: a status seen today (here) is "today,
  // 3 min ago", an older one "on <local date>", and the verb follows the local day. The hover
  // text is the full local time with its zone. Without this script the server's UTC wording stays.
  function when(li) {
    var t = li.querySelector("time.when");
    var at = t && t.dateTime ? new Date(t.dateTime) : null;
    if (!at || isNaN(at.getTime())) return;
    var now = new Date();
    var minutes = Math.max(0, Math.floor((now.getTime() - at.getTime()) / 60000));
    var today = at.toDateString() === now.toDateString();
    var ago = minutes < 1 ? "just now" : minutes < 60 ? minutes + " min ago" : Math.floor(minutes / 60) + " h ago";
    t.textContent = today ? "today, " + ago : "on " + at.toLocaleDateString(undefined, { year: "numeric", month: "short", day: "numeric" });
    t.title = at.toLocaleString(undefined, {
      year: "numeric", month: "short", day: "numeric", hour: "numeric", minute: "2-digit", timeZoneName: "short"
    });
    var verb = li.querySelector(".verb");
    if (verb) verb.textContent = today ? "is" : "was";
  }
  function allWhen() {
    Array.prototype.forEach.call(feed.children, when);
  }
  allWhen();
  setInterval(allWhen, 60000);
  function byUri(uri) {
    return Array.prototype.filter.call(feed.children, function (li) { return li.dataset.uri === uri; })[0];
  }
  function apply(m) {
    if (m.type === "status_upserted") {
      var s = m.status;
      var old = byUri(s.uri);
      if (old) old.remove();
      // In the feed's order (newest first): a status new to the page but old (read from a
      // repository at sign-in, say) goes where a reload would put it, not on top.
      var after = Array.prototype.find.call(feed.children, function (li) {
        var t = li.querySelector("time.when");
        return t && t.dateTime && new Date(t.dateTime).getTime() < s.indexed_at;
      });
      feed.insertBefore(line(s), after || null);
      while (feed.children.length > MAX_LINES) feed.lastElementChild.remove();
      var empty = document.getElementById("empty");
      if (empty) empty.remove();
      if (s.author_did === viewer) highlight(s.status);
    } else if (m.type === "status_confirmed") {
      var li = byUri(m.uri);
      if (li) li.classList.remove("pending");
    } else if (m.type === "status_deleted") {
      var gone = byUri(m.uri);
      if (gone) gone.remove();
    } else if (m.type === "handle_changed") {
      Array.prototype.forEach.call(feed.children, function (li) {
        if (li.dataset.did === m.did) li.querySelector(".author").textContent = "@" + (m.handle || m.did);
      });
    } else if (m.type === "profile_changed") {
      Array.prototype.forEach.call(feed.children, function (li) {
        if (li.dataset.did !== m.did) return;
        var name = li.querySelector(".name");
        name.textContent = m.display_name || "";
        name.hidden = !m.display_name;
      });
    } else if (m.type === "counts_changed") {
      countsChanged(m.counts);
    } else if (m.type === "account_changed" && !m.active) {
      Array.prototype.forEach.call(feed.querySelectorAll("li"), function (li) {
        if (li.dataset.did === m.did) li.remove();
      });
    }
  }
  function connect() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    var query = [];
    if (shard) query.push("shard=" + shard);
    if (seq) query.push("since=" + seq);
    var ws = new WebSocket(proto + "//" + location.host + "/ws" + (query.length ? "?" + query.join("&") : ""));
    var pinger = null;
    var resync = false;
    ws.onopen = function () {
      delay = 1000;
      if (paused) { unsay(); paused = false; }
      pinger = setInterval(function () { ws.send('{"type":"ping"}'); }, 30000);
    };
    // One message, or several of one publish packed in an array, in order. Returns false once
    // the page stops reading this socket (it reloads or resyncs).
    function take(m) {
      if (!m || m.type === "pong") return true;
      if (m.v !== 1 || m.type === "reload") { location.reload(); return false; }
      if (seq) {
        var n = Number(m.seq), last = Number(seq);
        if (n <= last) return true;
        if (n > last + 1) {
          resync = true;
          ws.close(1000, "resync");
          return false;
        }
      }
      seq = String(m.seq);
      apply(m);
      return true;
    }
    ws.onmessage = function (event) {
      var data;
      try { data = JSON.parse(event.data); } catch (e) { return; }
      var list = Array.isArray(data) ? data : [data];
      for (var i = 0; i < list.length; i++) if (!take(list[i])) return;
    };
    ws.onclose = function (event) {
      clearInterval(pinger);
      if (event.reason === "reload") return;
      if (resync) { connect(); return; }
      if (event.code === 1013) {
        // The broker will not keep this socket now (too many from this network, or full): say
        // so, and wait a minute rather than knock again at once.
        say("Live updates are paused (" + event.reason + "); they resume within a minute, or reload the page.", true);
        paused = true;
        delay = 60000;
      }
      setTimeout(connect, delay + Math.random() * delay / 2);
      delay = Math.min(delay * 2, event.code === 1013 ? 120000 : 30000);
    };
  }
  // History pages (older statuses, a person's page) show the feed as it was: not live.
  if (app.dataset.live === "on") connect();

  // Picking a status without a reload. Browsers without `event.submitter` post the plain form.
  var grid = document.getElementById("grid");
  var posting = false;
  function say(text, calm) {
    var p = document.getElementById("live-notice");
    if (!p) {
      p = document.createElement("p");
      p.id = "live-notice";
      app.insertBefore(p, app.firstChild);
    }
    p.className = calm ? "notice" : "notice error";
    p.setAttribute("role", calm ? "status" : "alert");
    p.textContent = text;
  }
  function unsay() {
    var p = document.getElementById("live-notice");
    if (p) p.remove();
  }
  var clearForm = document.getElementById("clear");
  // Posts a form with fetch, asking for JSON; `done(body)` on success, a sentence otherwise.
  function send(path, params, done) {
    if (posting) return;
    posting = true;
    grid.setAttribute("aria-busy", "true");
    fetch(path, {
      method: "POST",
      headers: { "Accept": "application/json" },
      body: new URLSearchParams(params),
      credentials: "same-origin"
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (response.ok) {
          unsay();
          done(body);
          // Done in the repo but not recorded yet: the socket brings it when it is.
          if (body.notice) say(body.notice, true);
        } else if (response.status === 401) {
          // Signed out (elsewhere, or the sign-in ended): say why, and offer sign-in again.
          say((body.error || "Your sign-in has ended.") + " Reload the page to sign in again.");
          Array.prototype.forEach.call(document.querySelectorAll("#grid button, #clear button"), function (b) { b.disabled = true; });
        } else {
          say(body.error || "Something went wrong (" + response.status + "). Please try again.");
        }
      });
    }).catch(function () {
      say("Statusphere could not be reached. Check your connection and try again.");
    }).then(function () {
      posting = false;
      grid.removeAttribute("aria-busy");
    });
  }
  if (grid && viewer && window.fetch && window.URLSearchParams) {
    grid.addEventListener("submit", function (event) {
      var button = event.submitter;
      if (!button || !button.value) return;
      event.preventDefault();
      send("/status", { status: button.value }, function (body) {
        highlight(button.value);
        if (clearForm) clearForm.hidden = false;
        // The new line at once; the same message over the socket then changes nothing.
        if (body.status && body.status.uri) apply({ type: "status_upserted", status: body.status });
        countsChanged(body.counts);
      });
    });
  }
  // Clearing a status: the line goes at once, the grid shows the status that is current now.
  if (clearForm && viewer && window.fetch && window.URLSearchParams) {
    clearForm.addEventListener("submit", function (event) {
      event.preventDefault();
      send("/status/clear", {}, function (body) {
        if (body.deleted) apply({ type: "status_deleted", uri: body.deleted });
        highlight(body.current || "");
        clearForm.hidden = !body.current;
        countsChanged(body.counts);
      });
    });
  }
})();
