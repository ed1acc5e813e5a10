// Structured editor of a pipeline definition (admin pipeline page). The definition textarea stays
// the one field the form submits: the editor rewrites it on every change, and rebuilds itself
// when an expert edits the JSON. Each change is posted to the preview endpoint, which validates
// the definition with registry.dag and answers the picture (SVG) and the errors.
(function () {
  "use strict";
  var root = document.querySelector(".pipeline-definition-field");
  if (!root) { return; }
  var textarea = root.querySelector("textarea");
  var editor = root.querySelector('[data-role="pe-editor"]');
  var pictureBox = root.querySelector('[data-role="pe-picture"]');
  var raw = root.querySelector('[data-role="pe-raw"]');
  var previewUrl = root.dataset.previewUrl;
  var components = JSON.parse(document.getElementById("pipeline-editor-components").textContent);
  var byKey = {};
  components.forEach(function (c) { byKey[c.name + "@" + c.version] = c; });
  var model = null;
  var nodeErrors = {};
  var previewTimer = null;
  var previewSeq = 0;

  function el(tag, attrs, text) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (name) {
      if (attrs[name] !== undefined && attrs[name] !== null) { node.setAttribute(name, attrs[name]); }
    });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }

  function parseTextarea() {
    var value;
    try { value = JSON.parse(textarea.value || "{}"); } catch (e) { return null; }
    if (value === null) { value = {}; }  // a new pipeline's empty field
    if (typeof value !== "object" || Array.isArray(value)) { return null; }
    if (!Array.isArray(value.nodes)) { value.nodes = []; }
    if (!Array.isArray(value.edges)) { value.edges = []; }
    return value;
  }

  function write() {
    textarea.value = JSON.stringify(model, null, 2);
    schedulePreview();
  }

  function componentKey(node) {
    var c = node.component;
    return c && typeof c === "object" ? c.name + "@" + c.version : "";
  }

  function nodeIds() {
    return model.nodes.map(function (n) { return n && n.id !== undefined ? String(n.id) : ""; });
  }

  // --- parameter inputs from the component's input_schema ---------------------------------------
  function paramInput(node, name, schema, required) {
    var params = node.parameters && typeof node.parameters === "object" ? node.parameters : {};
    var has = Object.prototype.hasOwnProperty.call(params, name);
    var current = has ? params[name] : undefined;
    var box = el("div", { "class": "pe-param" });
    var hint = [];
    if (schema.type) { hint.push(Array.isArray(schema.type) ? schema.type.join("|") : schema.type); }
    if (schema.minimum !== undefined) { hint.push("min " + schema.minimum); }
    if (schema.maximum !== undefined) { hint.push("max " + schema.maximum); }
    if (required) { hint.push("required"); }
    var label = el("label", { title: schema.description || "" }, name + (hint.length ? " (" + hint.join(", ") + ")" : ""));
    box.appendChild(label);
    var defaultText = schema["default"] !== undefined ? "default " + JSON.stringify(schema["default"]) : "";
    var input;

    function set(value) {
      if (!node.parameters || typeof node.parameters !== "object") { node.parameters = {}; }
      if (value === undefined) { delete node.parameters[name]; } else { node.parameters[name] = value; }
      write();
    }

    if (Array.isArray(schema["enum"]) || schema.type === "boolean") {
      var options = Array.isArray(schema["enum"]) ? schema["enum"] : [true, false];
      input = el("select", { "data-param": name });
      input.appendChild(el("option", { value: "" }, defaultText ? "(" + defaultText + ")" : "(not set)"));
      options.forEach(function (option, index) {
        var opt = el("option", { value: String(index) }, JSON.stringify(option));
        if (has && JSON.stringify(current) === JSON.stringify(option)) { opt.selected = true; }
        input.appendChild(opt);
      });
      input.addEventListener("change", function () {
        set(input.value === "" ? undefined : options[Number(input.value)]);
      });
    } else if (schema.type === "integer" || schema.type === "number") {
      input = el("input", { type: "number", "data-param": name, placeholder: defaultText,
                            min: schema.minimum, max: schema.maximum, step: schema.type === "integer" ? "1" : "any" });
      if (has) { input.value = String(current); }
      input.addEventListener("input", function () {
        var text = input.value.trim();
        if (text === "") { set(undefined); return; }
        var number = Number(text);
        set(isNaN(number) ? text : number);  // the preview names what is wrong with it
      });
    } else if (schema.type === "string") {
      input = el("input", { type: "text", "data-param": name, placeholder: defaultText, maxlength: schema.maxLength });
      if (has) { input.value = String(current); }
      input.addEventListener("input", function () { set(input.value === "" ? undefined : input.value); });
    } else {
      // Objects, arrays, anything else: JSON text.
      input = el("input", { type: "text", "data-param": name, placeholder: (defaultText || "JSON"), size: 30 });
      if (has) { input.value = JSON.stringify(current); }
      input.addEventListener("input", function () {
        if (input.value.trim() === "") { set(undefined); return; }
        try { set(JSON.parse(input.value)); input.setCustomValidity(""); }
        catch (e) { input.setCustomValidity("not JSON"); }
      });
    }
    box.appendChild(input);
    return box;
  }

  function paramsForm(node) {
    var wrap = el("div", { "class": "pe-params" });
    var component = byKey[componentKey(node)];
    var schema = component && component.input_schema && typeof component.input_schema === "object" ? component.input_schema : {};
    var properties = schema.properties && typeof schema.properties === "object" ? schema.properties : {};
    var required = Array.isArray(schema.required) ? schema.required : [];
    var names = Object.keys(properties);
    names.forEach(function (name) {
      wrap.appendChild(paramInput(node, name, properties[name] || {}, required.indexOf(name) >= 0));
    });
    var params = node.parameters && typeof node.parameters === "object" ? node.parameters : {};
    var others = {};
    Object.keys(params).forEach(function (name) { if (names.indexOf(name) < 0) { others[name] = params[name]; } });
    if (Object.keys(others).length) {
      wrap.appendChild(el("div", { "class": "pe-note" }, "Not in the component's schema: " + JSON.stringify(others)));
    }
    if (!names.length && !Object.keys(others).length) {
      wrap.appendChild(el("span", { "class": "help" }, "This component takes no parameters."));
    }
    return wrap;
  }

  // --- node and edge rows -------------------------------------------------------------------------
  function nodeRow(node, index) {
    var row = el("div", { "class": "pe-node", "data-node-index": String(index) });
    var head = el("div", { "class": "pe-node-head" });
    head.appendChild(el("label", {}, "Node id"));
    var idInput = el("input", { type: "text", "data-role": "node-id", value: node.id === undefined ? "" : String(node.id), size: 18 });
    var oldId = node.id;
    idInput.addEventListener("input", function () { node.id = idInput.value; write(); });
    idInput.addEventListener("change", function () {
      // Edges follow a renamed node.
      model.edges.forEach(function (edge) {
        if (edge.from === oldId) { edge.from = node.id; }
        if (edge.to === oldId) { edge.to = node.id; }
      });
      oldId = node.id;
      write();
      build();
    });
    head.appendChild(idInput);
    head.appendChild(el("label", {}, "Component"));
    var picker = el("select", { "data-role": "node-component" });
    var key = componentKey(node);
    if (!byKey[key]) {
      picker.appendChild(el("option", { value: key }, key ? "not registered: " + key.replace("@", " ") : "(choose)"));
    }
    components.forEach(function (c) {
      var opt = el("option", { value: c.name + "@" + c.version }, c.name + " " + c.version);
      if (c.name + "@" + c.version === key) { opt.selected = true; }
      picker.appendChild(opt);
    });
    picker.addEventListener("change", function () {
      var chosen = byKey[picker.value];
      if (!chosen) { return; }
      node.component = { name: chosen.name, version: chosen.version };
      // Parameters the new component does not know would only be refused.
      var known = (chosen.input_schema && chosen.input_schema.properties) || {};
      var kept = {};
      Object.keys(node.parameters || {}).forEach(function (name) { if (known[name]) { kept[name] = node.parameters[name]; } });
      node.parameters = kept;
      write();
      build();
    });
    head.appendChild(picker);
    var remove = el("button", { type: "button", "data-role": "node-remove" }, "Remove node");
    remove.addEventListener("click", function () {
      var id = node.id;
      model.nodes.splice(index, 1);
      model.edges = model.edges.filter(function (e) { return e.from !== id && e.to !== id; });
      write();
      build();
    });
    head.appendChild(remove);
    row.appendChild(head);
    row.appendChild(paramsForm(node));
    var problems = nodeErrors[String(node.id)];
    if (problems) {
      problems.forEach(function (text) { row.appendChild(el("div", { "class": "pe-note pe-error" }, text)); });
    }
    return row;
  }

  function nodeSelect(value, role) {
    var select = el("select", { "data-role": role });
    var ids = nodeIds();
    if (ids.indexOf(String(value)) < 0) { select.appendChild(el("option", { value: String(value) }, "missing: " + value)); }
    ids.forEach(function (id) {
      var opt = el("option", { value: id }, id);
      if (id === String(value)) { opt.selected = true; }
      select.appendChild(opt);
    });
    return select;
  }

  function edgeRow(edge, index) {
    var row = el("div", { "class": "pe-edge", "data-edge-index": String(index) });
    var from = nodeSelect(edge.from, "edge-from");
    var to = nodeSelect(edge.to, "edge-to");
    from.addEventListener("change", function () { edge.from = from.value; write(); });
    to.addEventListener("change", function () { edge.to = to.value; write(); });
    row.appendChild(from);
    row.appendChild(el("span", {}, "→"));
    row.appendChild(to);
    var remove = el("button", { type: "button", "data-role": "edge-remove" }, "Remove edge");
    remove.addEventListener("click", function () { model.edges.splice(index, 1); write(); build(); });
    row.appendChild(remove);
    return row;
  }

  function build() {
    editor.textContent = "";
    editor.hidden = false;
    if (model === null) {
      editor.appendChild(el("p", { "class": "pe-note" }, "The JSON below does not parse: fix it there, or undo, to use the editor."));
      return;
    }
    editor.appendChild(el("h3", {}, "Nodes"));
    model.nodes.forEach(function (node, index) {
      if (node && typeof node === "object") { editor.appendChild(nodeRow(node, index)); }
    });
    var addNode = el("button", { type: "button", "data-role": "node-add" }, "Add node");
    addNode.addEventListener("click", function () {
      var ids = nodeIds();
      var n = model.nodes.length + 1;
      while (ids.indexOf("step" + n) >= 0) { n += 1; }
      var first = components[0];
      model.nodes.push({ id: "step" + n, component: first ? { name: first.name, version: first.version } : null, parameters: {} });
      write();
      build();
    });
    editor.appendChild(addNode);
    editor.appendChild(el("h3", {}, "Edges (parent → child)"));
    model.edges.forEach(function (edge, index) {
      if (edge && typeof edge === "object") { editor.appendChild(edgeRow(edge, index)); }
    });
    var addEdge = el("button", { type: "button", "data-role": "edge-add" }, "Add edge");
    addEdge.disabled = model.nodes.length < 2;
    addEdge.addEventListener("click", function () {
      var ids = nodeIds();
      model.edges.push({ from: ids[ids.length - 2], to: ids[ids.length - 1] });
      write();
      build();
    });
    editor.appendChild(addEdge);
  }

  // --- preview --------------------------------------------------------------------------------
  function csrfToken() {
    var input = document.querySelector('input[name="csrfmiddlewaretoken"]');
    return input ? input.value : "";
  }

  function showPicture(data) {
    var block = el("div", { "class": "dag-picture-block" });
    if (data.svg) {
      var doc = new DOMParser().parseFromString(data.svg, "image/svg+xml");
      var svg = doc.documentElement;
      if (svg && svg.nodeName.toLowerCase() === "svg") { block.appendChild(document.importNode(svg, true)); }
    } else {
      block.appendChild(el("p", { "class": "dag-problem" }, "No picture: " + (data.problem || "")));
    }
    if (data.lines && data.lines.length) {
      var list = el("ul", { "class": "dag-errors errorlist", "data-role": "pe-errors" });
      data.lines.forEach(function (line) { list.appendChild(el("li", {}, line)); });
      block.appendChild(list);
    }
    pictureBox.textContent = "";
    pictureBox.appendChild(block);
    nodeErrors = {};
    (data.errors || []).forEach(function (e) {
      if (e.node !== null && e.node !== undefined) {
        (nodeErrors[String(e.node)] = nodeErrors[String(e.node)] || []).push(e.field + ": " + e.message);
      }
    });
  }

  function preview() {
    var definition = parseTextarea();
    if (definition === null) { return; }
    var seq = ++previewSeq;
    fetch(previewUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrfToken(), Accept: "application/json" },
      body: JSON.stringify({ definition: definition })
    }).then(function (response) { return response.json(); })
      .then(function (data) {
        if (seq !== previewSeq) { return; }  // a later change is on its way
        showPicture(data);
        var active = document.activeElement;
        if (!editor.contains(active)) { build(); } else { markRows(); }
      })
      .catch(function () {});
  }

  function markRows() {
    editor.querySelectorAll(".pe-node").forEach(function (row) {
      var node = model && model.nodes[Number(row.dataset.nodeIndex)];
      row.querySelectorAll(".pe-note.pe-error").forEach(function (note) { note.remove(); });
      var problems = node ? nodeErrors[String(node.id)] : null;
      (problems || []).forEach(function (text) { row.appendChild(el("div", { "class": "pe-note pe-error" }, text)); });
    });
  }

  function schedulePreview() {
    if (previewTimer) { window.clearTimeout(previewTimer); }
    previewTimer = window.setTimeout(preview, 350);
  }

  textarea.addEventListener("input", function () {
    model = parseTextarea();
    build();
    schedulePreview();
  });

  model = parseTextarea();
  if (model !== null && (textarea.value.trim() === "" || textarea.value.trim() === "null")) {
    textarea.value = JSON.stringify(model, null, 2);
  }
  build();
  if (raw) { raw.open = false; }
  schedulePreview();
})();
