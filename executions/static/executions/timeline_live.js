// The execution page's timeline follows the run: each state the live panel renders (over the
// WebSocket or by polling, see live_progress.js) redraws the Gantt chart from the steps' start
// and end times, as executions/admin_pictures.py draws it (same rows, classes and texts; a step
// still running ends at the state's timestamp). Rows keep the page's order; new ones go last.
(function () {
  "use strict";

  function durationText(ms) {
    if (ms === null || ms === undefined) { return "\u2014"; }
    if (ms < 1000) { return Math.round(ms) + " ms"; }
    if (ms < 60000) { return (ms / 1000).toFixed(1) + " s"; }
    return Math.floor(ms / 60000) + " min " + Math.floor((ms % 60000) / 1000) + " s";
  }

  // Milliseconds with the microseconds the server sends (Date.parse keeps only milliseconds).
  function time(iso) {
    if (!iso) { return null; }
    var fraction = /\.(\d+)/.exec(iso);
    var whole = Date.parse(iso.replace(/\.\d+/, ""));
    return fraction ? whole + parseFloat("0." + fraction[1]) * 1000 : whole;
  }

  function rows(steps, now) {
    var started = steps.filter(function (s) { return s.started_at; });
    if (!started.length) { return null; }
    var t0 = Math.min.apply(null, started.map(function (s) { return time(s.started_at); }));
    var end = Math.max.apply(null, started.map(function (s) { return time(s.completed_at) || now; }));
    var span = Math.max(end - t0, 1);
    var out = steps.map(function (s) {
      if (!s.started_at) { return { node_id: s.node_id, status: s.status, bar: false, duration: null }; }
      var start = time(s.started_at), duration = (time(s.completed_at) || now) - start;
      return { node_id: s.node_id, status: s.status, bar: true, start_ms: start - t0, duration: duration,
               left: Math.round(10000 * (start - t0) / span) / 100,
               width: Math.round(100 * Math.max(100 * duration / span, 0.3)) / 100 };
    });
    var timed = out.filter(function (r) { return r.bar; });
    var slowest = null;
    if (timed.length > 1) {
      slowest = timed.reduce(function (a, b) { return b.duration > a.duration ? b : a; });
    }
    out.forEach(function (r) { r.slowest = r === slowest; });
    return { rows: out, span: span };
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) { node.className = className; }
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  function table(chart) {
    var tableNode = element("table", "run-timeline");
    tableNode.setAttribute("data-role", "run-timeline");
    var body = element("tbody");
    chart.rows.forEach(function (r) {
      var tr = element("tr", "tl-row" + (r.slowest ? " tl-slowest" : ""));
      tr.setAttribute("data-node-id", r.node_id);
      var name = element("td", "tl-node", r.node_id);
      name.title = r.node_id;
      var cell = element("td", "tl-chart"), track = element("div", "tl-track");
      if (r.bar) {
        var bar = element("div", "tl-bar status-" + String(r.status).toLowerCase().replace(/[^a-z_]/g, ""));
        bar.style.left = r.left + "%";
        bar.style.width = r.width + "%";
        bar.title = r.node_id + ": " + durationText(r.duration) + " from +" + durationText(r.start_ms) +
          " (" + r.status + ")";
        track.appendChild(bar);
      }
      cell.appendChild(track);
      tr.appendChild(name);
      tr.appendChild(cell);
      tr.appendChild(element("td", "tl-time", durationText(r.duration) + (r.slowest ? " \u00b7 slowest" : "")));
      body.appendChild(tr);
    });
    var foot = element("tfoot"), footRow = element("tr"), axisCell = element("td", "tl-chart");
    var axis = element("div", "tl-axis");
    [0, chart.span / 2, chart.span].forEach(function (ms, i) {
      axis.appendChild(element("span", "", i === 0 ? "0" : durationText(ms)));
    });
    axisCell.appendChild(axis);
    footRow.appendChild(element("td"));
    footRow.appendChild(axisCell);
    footRow.appendChild(element("td"));
    foot.appendChild(footRow);
    tableNode.appendChild(body);
    tableNode.appendChild(foot);
    return tableNode;
  }

  function inPageOrder(box, steps) {
    var order = {};
    box.querySelectorAll("tr.tl-row").forEach(function (tr, i) { order[tr.getAttribute("data-node-id")] = i; });
    return steps.map(function (s, i) { return { s: s, i: i }; }).sort(function (a, b) {
      var x = a.s.node_id in order ? order[a.s.node_id] : 1e6 + a.i;
      var y = b.s.node_id in order ? order[b.s.node_id] : 1e6 + b.i;
      return x - y;
    }).map(function (p) { return p.s; });
  }

  document.addEventListener("imageflow:live-state", function (event) {
    var box = document.getElementById("run-timeline-live");
    if (!box) { return; }
    var state = event.detail || {};
    var now = time(state.timestamp) || Date.now();
    var chart = rows(inPageOrder(box, state.steps || []), now);
    box.replaceChildren(chart ? table(chart) :
      element("p", "run-timeline-empty", "No step has started yet."));
  });
})();
