/* Silbato: live updates for the page, without a framework. ES5, for old phones.
   Server-sent events from /api/events; if they are not available (old browser, or
   every live slot taken), the page polls /api/live every 15 seconds. */
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live) { return; }
  var lang = document.documentElement.lang || "en";
  var version = live.getAttribute("data-version");
  var announce = document.getElementById("announce");
  var conn = document.getElementById("conn");
  var actions = document.getElementById("captain-actions");
  var serverNow = parseFloat(live.getAttribute("data-now")) || 0;
  var loadedAt = Date.now();
  var rtf = null;
  try {
    var tag = lang === "tl" ? "fil" : lang;
    if (window.Intl && Intl.RelativeTimeFormat && Intl.RelativeTimeFormat.supportedLocalesOf([tag]).length) {
      rtf = new Intl.RelativeTimeFormat(tag, {numeric: "always"});
    }
  } catch (e) { rtf = null; }

  function status(key) {
    if (conn && conn.getAttribute("data-" + key)) { conn.textContent = conn.getAttribute("data-" + key); }
  }

  /* Ages ("3 minutes ago") on the node's clock, whatever the phone's clock says. */
  function ages() {
    if (!rtf) { return; }
    var now = serverNow + (Date.now() - loadedAt) / 1000;
    var times = live.querySelectorAll("time[data-ts]");
    for (var i = 0; i < times.length; i++) {
      var s = Math.max(0, now - parseFloat(times[i].getAttribute("data-ts")));
      var text = s < 60 ? rtf.format(-Math.round(s), "second") :
        s < 3600 ? rtf.format(-Math.round(s / 60), "minute") :
        s < 86400 ? rtf.format(-Math.round(s / 3600), "hour") : rtf.format(-Math.round(s / 86400), "day");
      times[i].textContent = text;
    }
  }

  function get(url, done) {
    var xhr = new XMLHttpRequest();
    xhr.open("GET", url);
    xhr.onreadystatechange = function () {
      if (xhr.readyState === 4) { done(xhr.status, xhr.responseText); }
    };
    xhr.send();
  }

  var pendingTimer = null;
  function refreshActions() {
    if (!actions) { return; }
    get(actions.getAttribute("data-src"), function (code, html) {
      if (code !== 200) { return; }
      actions.innerHTML = html;
      clearTimeout(pendingTimer);
      /* A request waits for the node daemon or the radio: look again until it is sent or refused. */
      var waiting = actions.querySelector("[data-pending]");
      if (waiting) {
        pendingTimer = setTimeout(refreshActions, 1000 * (parseInt(waiting.getAttribute("data-pending"), 10) || 1));
      }
    });
  }

  function apply(doc) {
    if (!doc || doc.version === version) { return; }
    var card = document.getElementById("rights");
    var wasOpen = card && card.open;
    var before = live.querySelector(".banner h1");
    var beforeText = before ? before.textContent : "";
    version = doc.version;
    serverNow = doc.now;
    loadedAt = Date.now();
    live.innerHTML = doc.html;
    live.setAttribute("data-version", version);
    card = document.getElementById("rights");
    if (card && wasOpen) { card.open = true; }
    var banner = live.querySelector(".banner h1");
    if (banner) {
      document.title = banner.textContent + " · Silbato";
      if (announce && banner.textContent !== beforeText) { announce.textContent = banner.textContent; }
    }
    ages();
    refreshActions();
  }

  var polling = false;
  function poll() {
    polling = true;
    status("poll");
    get("/api/live?lang=" + encodeURIComponent(lang), function (code, text) {
      if (code === 200) { try { apply(JSON.parse(text)); } catch (e) { /* keep the page as it is */ } }
      setTimeout(poll, 15000);
    });
  }

  if (window.EventSource) {
    var source = new EventSource("/api/events?lang=" + encodeURIComponent(lang));
    source.addEventListener("state", function (event) {
      status("live");
      try { apply(JSON.parse(event.data)); } catch (e) { /* keep the page as it is */ }
    });
    var lostTimer = null;
    source.onopen = function () { clearTimeout(lostTimer); status("live"); };
    source.onerror = function () {
      /* CLOSED: the server refused (every live slot taken); otherwise the browser retries,
         as it does every few minutes when the server ends a stream: say so only if it lasts. */
      if (source.readyState === 2) { source.close(); if (!polling) { poll(); } return; }
      clearTimeout(lostTimer);
      lostTimer = setTimeout(function () { status("lost"); }, 5000);
    };
  } else {
    poll();
  }
  if (actions && actions.querySelector("[data-pending]")) { pendingTimer = setTimeout(refreshActions, 1000); }
  ages();
  setInterval(ages, 30000);
}());
