/* Silbato: evidence in pieces, with a progress bar, resumed after a dropped connection.
   ES2017 at most (async/await, no modules), for old phones. Without this script the
   form still sends in one request (files up to the size the page states).
   The protocol: web/uploads.py. */
(function () {
  "use strict";
  var form = document.getElementById("evidence-form");
  if (!form || !window.XMLHttpRequest || !window.FormData || !window.Promise || !window.Blob) { return; }
  var input = form.querySelector("input[type=file]");
  var statement = form.querySelector("textarea");
  var button = form.querySelector("button[type=submit]");
  var box = document.getElementById("upload-progress");
  var bar = box.querySelector("progress");
  var say = box.querySelector("p");
  var token = form.querySelector("input[name=csrf_token]").value;
  var lang = document.documentElement.lang || "en";
  var limit = document.getElementById("form-limit");
  if (limit) { limit.hidden = true; }  /* with this script, the larger limit applies */

  function Refused(message) { this.message = message; }

  function withLang(url) {
    return url + (url.indexOf("?") < 0 ? "?" : "&") + "lang=" + encodeURIComponent(lang);
  }

  /* Resolves with {status, data} for any answer; rejects if the connection failed. */
  function send(method, url, body, headers, progress) {
    return new Promise(function (resolve, reject) {
      var xhr = new XMLHttpRequest();
      xhr.open(method, withLang(url));
      xhr.timeout = 120000;
      xhr.setRequestHeader("Accept", "application/json");
      Object.keys(headers || {}).forEach(function (k) { xhr.setRequestHeader(k, headers[k]); });
      if (progress && xhr.upload) { xhr.upload.onprogress = progress; }
      xhr.onload = function () {
        var data = {};
        try { data = JSON.parse(xhr.responseText) || {}; } catch (e) { data = {}; }
        resolve({status: xhr.status, data: data});
      };
      xhr.onerror = xhr.ontimeout = xhr.onabort = function () { reject(new Error("connection")); };
      xhr.send(body);
    });
  }

  function wait(ms) { return new Promise(function (resolve) { setTimeout(resolve, ms); }); }

  function show(text, percent) {
    box.hidden = false;
    if (text) { say.textContent = text; }
    if (percent !== undefined) { bar.value = percent; }
  }

  function progress(file, done) {
    var percent = Math.floor(done * 100 / Math.max(file.size, 1));
    show(form.getAttribute("data-sending").replace("{name}", file.name).replace("{percent}", String(percent)), percent);
  }

  function failure(answer) {
    return new Refused((answer.data && answer.data.error) || form.getAttribute("data-failed"));
  }

  async function start(file) {
    var delay = 1000;
    for (;;) {
      var body = new FormData();
      body.append("csrf_token", token);
      body.append("size", String(file.size));
      body.append("type", file.type || "application/octet-stream");
      var answer;
      try {
        answer = await send("POST", form.getAttribute("data-uploads"), body);
      } catch (e) {
        show(form.getAttribute("data-retrying"));
        await wait(delay);
        delay = Math.min(delay * 2, 15000);
        continue;
      }
      if (answer.status === 201) { return answer.data; }
      throw failure(answer);
    }
  }

  /* One file, piece after piece; after a dropped connection, ask the node where it stands. */
  async function sendFile(file) {
    var upload = await start(file);
    var offset = upload.offset;
    var delay = 1000;
    progress(file, offset);
    while (!upload.done) {
      var end = Math.min(offset + upload.chunk, file.size);
      var answer;
      var from = offset;
      try {
        answer = await send("PUT", upload.url + "?offset=" + offset, file.slice(offset, end),
                            {"X-CSRFToken": token, "Content-Type": "application/octet-stream"},
                            function (event) { progress(file, from + event.loaded); });
      } catch (e) {
        show(form.getAttribute("data-retrying"));
        await wait(delay);
        delay = Math.min(delay * 2, 15000);
        try {
          answer = await send("GET", upload.url);
        } catch (e2) {
          continue;
        }
      }
      if (answer.status === 200) {
        delay = 1000;
        offset = answer.data.offset;
        upload.done = answer.data.done;
        progress(file, offset);
      } else if (answer.status === 409 && typeof answer.data.offset === "number") {
        offset = answer.data.offset;
      } else if (answer.status === 404 && answer.data.restart) {
        show(answer.data.error, 0);
        upload = await start(file);
        offset = upload.offset;
      } else {
        throw failure(answer);
      }
    }
  }

  async function sendStatement() {
    var body = new FormData();
    body.append("csrf_token", token);
    body.append("statement", statement.value);
    for (var tries = 0; ; tries++) {
      try {
        var answer = await send("POST", form.getAttribute("action"), body);
        if (answer.status >= 400) { throw failure(answer); }
        return;
      } catch (e) {
        if (e instanceof Refused || tries >= 5) { throw e; }
        show(form.getAttribute("data-retrying"));
        await wait(2000);
      }
    }
  }

  form.addEventListener("submit", function (event) {
    var files = Array.prototype.slice.call(input.files || []);
    if (!files.length) { return; }  /* a statement alone goes as a plain form */
    event.preventDefault();
    button.disabled = true;
    (async function () {
      var sent = 0;
      try {
        for (var i = 0; i < files.length; i++) {
          await sendFile(files[i]);
          sent++;
        }
        if (statement && statement.value.trim()) {
          await sendStatement();
          sent++;
        }
        window.location.href = form.getAttribute("data-done") + "?sent=" + sent + "#evidence";
      } catch (e) {
        show(e.message || form.getAttribute("data-failed"));
        button.disabled = false;
      }
    })();
  });
})();
