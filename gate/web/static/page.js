// rpmgate status page: live updates through /api/events (Server-Sent Events).
// The server renders the page; on each event this re-reads it and swaps <main>.
// EventSource reconnects by itself and sends Last-Event-ID, so nothing is missed;
// no polling while it works.  Without JavaScript the page is a snapshot.
(function () {
  "use strict";
  var body = document.body;
  var badge = document.getElementById("live");
  var TOPICS = ["item", "build", "job", "generation", "change", "delivery", "repo",
                "backend", "publish-failed", "reset", "message"];
  var timer = null, busy = false, again = false;
  body.dataset.refreshes = "0";

  function text(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 60) return seconds + "s";
    if (seconds < 3600) return Math.floor(seconds / 60) + "m " + String(seconds % 60).padStart(2, "0") + "s";
    return Math.floor(seconds / 3600) + "h " + String(Math.floor(seconds % 3600 / 60)).padStart(2, "0") + "m";
  }

  function tick() {  // elapsed times count on between two renderings
    var now = Date.now() / 1000;
    document.querySelectorAll("[data-since]").forEach(function (el) {
      el.textContent = text(now - Number(el.dataset.since));
    });
  }

  // a form in the page the reader has started to fill (a repository's diff) is
  // not swapped from under them; submitting it loads the page anyway
  var editing = false;
  document.addEventListener("change", function (ev) {
    if (ev.target.closest && ev.target.closest("#content form")) editing = true;
  });

  function refresh() {
    if (editing) return;
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, {headers: {"Accept": "text/html"}, cache: "no-store"})
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("content");
        var old = document.getElementById("content");
        if (fresh && old) {
          // a log tail the reader opened or folded stays so (keyed by its item)
          var folded = {};
          old.querySelectorAll("details[data-tail]").forEach(function (d) {
            folded[d.dataset.tail] = d.open;
          });
          fresh.querySelectorAll("details[data-tail]").forEach(function (d) {
            if (d.dataset.tail in folded) d.open = folded[d.dataset.tail];
          });
          old.replaceWith(document.importNode(fresh, true));
          body.dataset.refreshes = String(Number(body.dataset.refreshes) + 1);
          tick();
        }
      })
      .catch(function () { /* the next event tries again */ })
      .then(function () {
        busy = false;
        if (again) { again = false; schedule(); }
      });
  }

  function schedule() {  // a burst of events: one re-read
    if (timer === null) timer = setTimeout(function () { timer = null; refresh(); }, 200);
  }

  // the filter follows what is typed; the URL keeps it (?q=), as the form would
  var input = document.getElementById("q");
  var typing = null;
  if (input && window.history && body.dataset.live) {
    input.addEventListener("input", function () {
      clearTimeout(typing);
      typing = setTimeout(function () {
        var url = new URL(location.href);
        if (input.value.trim()) url.searchParams.set("q", input.value.trim());
        else url.searchParams.delete("q");
        history.replaceState(null, "", url);
        refresh();
      }, 250);
    });
  }

  setInterval(tick, 1000);
  if (!body.dataset.live) return;
  if (!window.EventSource) {  // no SSE at all: read the page now and then
    setInterval(refresh, 15000);
    return;
  }
  var events = new EventSource("/api/events");
  events.onopen = function () {
    badge.textContent = "live"; badge.className = "live on";
    schedule();  // what happened while connecting
  };
  events.onerror = function () { badge.textContent = "reconnecting"; badge.className = "live off"; };
  TOPICS.forEach(function (topic) { events.addEventListener(topic, schedule); });
})();
