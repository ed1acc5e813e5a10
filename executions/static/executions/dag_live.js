// The execution page's DAG picture follows the run: each state the live panel renders (over the
// WebSocket or by polling, see live_progress.js) sets the class dag-status-<status> on the
// picture's node for each step (SVG id "dagnode-" + the node id's UTF-8 bytes in hex).
(function () {
  "use strict";
  var STATUS = /\bdag-status-[a-z_]+\b/g;

  function domId(nodeId) {
    var bytes = new TextEncoder().encode(String(nodeId));
    var hex = "";
    for (var i = 0; i < bytes.length; i++) { hex += (bytes[i] < 16 ? "0" : "") + bytes[i].toString(16); }
    return "dagnode-" + hex;
  }

  document.addEventListener("imageflow:live-state", function (event) {
    var box = document.getElementById("dag-live");
    if (!box) { return; }
    (event.detail.steps || []).forEach(function (step) {
      var node = document.getElementById(domId(step.node_id));
      if (!node || !box.contains(node)) { return; }
      var classes = (node.getAttribute("class") || "").replace(STATUS, "").replace(/\s+/g, " ").trim();
      var status = String(step.status).toLowerCase().replace(/[^a-z_]/g, "");
      node.setAttribute("class", classes + " dag-status-" + status);
    });
  });
})();
