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

  // A map step's item counts: "37/120 items, 2 failed, 10 cached" and a bar, as
  // executions/admin_live.py writes them. The newest shown counts of each step are kept: a
  // step_items event can carry older counts than a state just read (docs/live-and-logs.md).
  var shownItems = {};

  function itemsText(items) {
    if (!items) { return ""; }
    var parts = [items.completed + "/" + items.total + " items"];
    ["failed", "skipped", "cached"].forEach(function (name) { if (items[name]) { parts.push(items[name] + " " + name); } });
    return parts.join(", ");
  }

  function itemsPercentage(items) {
    if (!items || !items.total) { return 0; }
    return Math.round(1000 * (items.completed + items.failed + items.skipped) / items.total) / 10;
  }

  function older(items, than) {
    return !!than && ["total", "completed", "failed", "skipped", "cached"].every(function (name) {
      return items[name] <= than[name];
    }) && ["total", "completed", "failed", "skipped", "cached"].some(function (name) { return items[name] < than[name]; });
  }

  function fillItems(td, items) {
    td.textContent = "";
    if (!items) { td.textContent = "\u2014"; return; }
    var outer = document.createElement("span"), inner = document.createElement("span");
    outer.className = "run-progress";  // registry/static/registry/admin_pictures.css
    inner.style.width = itemsPercentage(items) + "%";
    outer.appendChild(inner);
    td.appendChild(outer);
    td.appendChild(document.createTextNode(itemsText(items)));
  }

  function renderRunItems(runItems) {
    role("run-items").textContent = runItems ? "\u00b7 " + itemsText(runItems) : "";
  }

  // A step_items event: that step's cell and the run's items, in place. False when the step
  // has no row yet (the caller reads the whole state instead).
  function applyItems(event) {
    var row = role("steps").querySelector('tr[data-step-id="' + String(event.step_id).replace(/[^0-9a-f-]/gi, "") + '"]');
    if (!row || !event.items) { return false; }
    if (older(event.items, shownItems[event.step_id])) { return true; }
    shownItems[event.step_id] = event.items;
    fillItems(row.querySelector('[data-role="items"]'), event.items);
    if (event.run_items) { renderRunItems(event.run_items); }
    return true;
  }

  function render(state) {
    role("status").textContent = state.execution_status;
    role("counts").textContent = state.completed_steps + " / " + state.total_steps + " steps (" + state.percentage + "%)";
    role("bar").style.width = state.percentage + "%";
    role("bar-outer").classList.toggle("failed", state.execution_status === "failed");
    renderRunItems(state.run_items);
    var body = role("steps");
    body.textContent = "";
    shownItems = {};
    state.steps.forEach(function (step) {
      var row = document.createElement("tr");
      row.setAttribute("data-step-id", step.step_id);
      cell(row, step.node_id);
      cell(row, step.status, "status-" + step.status);
      var items = document.createElement("td");
      items.className = "items";
      items.setAttribute("data-role", "items");
      fillItems(items, step.items);
      if (step.items) { shownItems[step.step_id] = step.items; }
      row.appendChild(items);
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
  socket.onmessage = function (message) {
    var event = null;
    try { event = JSON.parse(message.data); } catch (error) { event = null; }
    // Item counts arrive a few times a second on a big run: shown in place, no request.
    if (event && event.type === "step_items" && applyItems(event)) { return; }
    refresh();
  };
  socket.onclose = function (event) {
    if (logTimer) { window.clearInterval(logTimer); }
    if (event.code === 1000) { role("connection").textContent = "finished"; refresh(); return; }
    if (!finished) { poll(); }
  };
})();
