// Live panel of the pipeline execution admin page: follow the run over the WebSocket and
// refresh the panel from the admin's JSON view; poll that view when WebSockets fail.
(function () {
  "use strict";
  var panel = document.getElementById("live-progress");
  if (!panel) { return; }
  var liveUrl = panel.dataset.liveUrl;
  var role = function (name) { return panel.querySelector('[data-role="' + name + '"]'); };
  var finished = false;
  var pollTimer = null;
  var refreshing = false;

  function cell(row, text, className) {
    var td = document.createElement("td");
    td.textContent = text === null || text === undefined || text === "" ? "—" : String(text);
    if (className) { td.className = className; }
    row.appendChild(td);
  }

  function render(state) {
    role("status").textContent = state.execution_status;
    role("counts").textContent = state.completed_steps + " / " + state.total_steps + " steps (" + state.percentage + "%)";
    role("bar").style.width = state.percentage + "%";
    role("bar-outer").classList.toggle("failed", state.execution_status === "failed");
    var body = role("steps");
    body.textContent = "";
    state.steps.forEach(function (step) {
      var row = document.createElement("tr");
      cell(row, step.node_id);
      cell(row, step.status, "status-" + step.status);
      cell(row, step.started);
      cell(row, step.completed);
      cell(row, step.execution_time_ms);
      body.appendChild(row);
    });
    var logs = role("logs");
    logs.textContent = "";
    state.logs.forEach(function (line) {
      var span = document.createElement("span");
      span.className = "lvl-" + line.level;
      span.textContent = line.time + " " + line.level.toUpperCase() + " " + (line.node_id || "-") + ": " + line.message + "\n";
      logs.appendChild(span);
    });
    logs.scrollTop = logs.scrollHeight;
    finished = state.final;
    // Other parts of the page (the DAG picture's node colors) follow the same state.
    document.dispatchEvent(new CustomEvent("imageflow:live-state", { detail: state }));
    // The read-only fields below were rendered while the run went on: say that they are behind.
    if (finished && panel.dataset.finalAtLoad === "false") { role("finished-note").hidden = false; }
  }

  function refresh() {
    if (refreshing) { return; }
    refreshing = true;
    fetch(liveUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (state) { if (state) { render(state); } })
      .catch(function () {})
      .then(function () { refreshing = false; });
  }

  function poll() {
    role("connection").textContent = "polling";
    pollTimer = window.setInterval(function () {
      if (finished) { window.clearInterval(pollTimer); role("connection").textContent = "finished"; return; }
      refresh();
    }, 3000);
  }

  if (!("WebSocket" in window)) { poll(); return; }
  var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
  var socket = new WebSocket(scheme + window.location.host + panel.dataset.wsPath);
  var logTimer = null;
  socket.onopen = function () {
    role("connection").textContent = "live";
    // Log lines written between two state changes show up within a few seconds too.
    logTimer = window.setInterval(function () { if (!finished) { refresh(); } }, 5000);
  };
  socket.onmessage = function () { refresh(); };
  socket.onclose = function (event) {
    if (logTimer) { window.clearInterval(logTimer); }
    if (event.code === 1000) { role("connection").textContent = "finished"; refresh(); return; }
    if (!finished) { poll(); }
  };
})();
