// Form builder: the field list lives in `state`, is drawn as editable cards, reordered with SortableJS
// (or the Move up/down buttons from the keyboard), and saved as JSON in the hidden fields_json input.
// Every change fires "fb-changed" so HTMX refreshes the live preview from the server's own template.
(function () {
  "use strict";

  function readJSON(id, fallback) {
    var node = document.getElementById(id);
    if (!node) return fallback;
    try { return JSON.parse(node.textContent); } catch (e) { return fallback; }
  }

  function onReady(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  onReady(function () {
    var form = document.getElementById("builder-form");
    var list = document.getElementById("fb-list");
    if (!form || !list) return;
    var hidden = form.querySelector("input[name=fields_json]");
    var empty = document.getElementById("fb-empty");
    var count = document.getElementById("fb-count");
    var state = readJSON("fb-initial", []) || [];
    var targets = readJSON("fb-targets", []);
    var types = readJSON("fb-types", []);
    var errors = readJSON("fb-errors", {});
    var typeLabels = {};
    types.forEach(function (t) { typeLabels[t.value] = t.label; });
    var CHOICE = { single_choice: true, multiple_choice: true };

    function newId() {
      var id;
      do { id = "f" + Math.random().toString(16).slice(2, 10); } while (state.some(function (f) { return f.id === id; }));
      return id;
    }

    function allowedTargets(type) {
      return targets.filter(function (t) {
        if (type === "file") return t.value === "contact.files";
        if (t.value === "contact.files") return false;
        if (type === "multiple_choice" || type === "checkbox" || type === "number") return !t.value.startsWith("contact.");
        if (t.value === "contact.email") return type === "email";
        if (t.value === "contact.phone") return type === "phone";
        if (t.value === "contact.birthday") return type === "date";
        return true;
      });
    }

    function defaultTarget(type) {
      var taken = state.map(function (f) { return f.maps_to; });
      var wish = { email: "contact.email", phone: "contact.phone", file: "contact.files" }[type];
      if (wish && taken.indexOf(wish) === -1) return wish;
      if (type === "text" && taken.indexOf("contact.name") === -1) return "contact.name";
      return "";
    }

    function sync() {
      hidden.value = JSON.stringify(state);
      empty.hidden = state.length > 0;
      count.textContent = state.length ? state.length + (state.length === 1 ? " field" : " fields") : "";
      document.body.dispatchEvent(new CustomEvent("fb-changed"));
    }

    function el(tag, attrs, children) {
      var node = document.createElement(tag);
      Object.keys(attrs || {}).forEach(function (key) {
        if (key === "text") node.textContent = attrs[key];
        else if (key === "className") node.className = attrs[key];
        else node.setAttribute(key, attrs[key]);
      });
      (children || []).forEach(function (child) { if (child) node.appendChild(child); });
      return node;
    }

    function errorFor(field, part) {
      return errors["fields." + field.id + "." + part] || "";
    }

    function control(field, part, label, input, wide) {
      var id = "fb-" + field.id + "-" + part;
      input.id = id;
      input.dataset.part = part;
      var message = errorFor(field, part);
      var wrap = el("div", { className: "field" + (wide ? " fb-wide" : "") + (message ? " has-error" : "") }, [
        el("label", { "for": id, text: label }),
        input,
      ]);
      if (message) {
        input.setAttribute("aria-invalid", "true");
        input.setAttribute("aria-describedby", id + "-error");
        wrap.appendChild(el("p", { className: "field-errors", id: id + "-error", text: message }));
      }
      return wrap;
    }

    function card(field, index) {
      var title = el("span", { className: "fb-field-title", text: field.label || "Untitled field" });
      var head = el("div", { className: "fb-field-head" }, [
        el("span", { className: "fb-handle", title: "Drag to reorder", "aria-hidden": "true", text: "⠿" }),
        el("span", { className: "badge", text: typeLabels[field.type] || field.type }),
        title,
        el("button", { type: "button", className: "fb-iconbtn", "data-move": "-1", "aria-label": "Move " + (field.label || "field") + " up", text: "↑" }),
        el("button", { type: "button", className: "fb-iconbtn", "data-move": "1", "aria-label": "Move " + (field.label || "field") + " down", text: "↓" }),
        el("button", { type: "button", className: "fb-iconbtn fb-remove", "data-remove": "1", "aria-label": "Remove " + (field.label || "field"), text: "✕" }),
      ]);
      var label = el("input", { type: "text", maxlength: "200", value: field.label || "" });
      var placeholder = el("input", { type: "text", maxlength: "200", value: field.placeholder || "" });
      var help = el("input", { type: "text", maxlength: "500", value: field.help_text || "" });
      var mapSelect = el("select");
      var lastGroup = null, groupNode = mapSelect;
      allowedTargets(field.type).forEach(function (t) {
        if (t.group !== lastGroup) {
          groupNode = t.group ? el("optgroup", { label: t.group }) : mapSelect;
          if (t.group) mapSelect.appendChild(groupNode);
          lastGroup = t.group;
        }
        var option = el("option", { value: t.value, text: t.label });
        if (t.value === (field.maps_to || "")) option.selected = true;
        groupNode.appendChild(option);
      });
      var required = el("input", { type: "checkbox" });
      required.checked = !!field.required;
      required.id = "fb-" + field.id + "-required";
      required.dataset.part = "required";
      var body = el("div", { className: "fb-field-body" }, [
        control(field, "label", "Label", label),
        control(field, "maps_to", "Goes to", mapSelect),
        field.type === "file" || field.type === "checkbox" ? null : control(field, "placeholder", "Placeholder", placeholder),
        control(field, "help_text", "Help text", help),
      ]);
      if (CHOICE[field.type]) {
        var choices = el("textarea", { rows: "3" });
        choices.value = (field.choices || []).join("\n");
        body.appendChild(control(field, "choices", "Choices (one per line)", choices, true));
      }
      body.appendChild(el("div", { className: "field" }, [
        el("label", { className: "check", "for": required.id }, [required, document.createTextNode(" Required")]),
      ]));
      var hasError = Object.keys(errors).some(function (k) { return k.indexOf("fields." + field.id + ".") === 0; });
      var item = el("li", { className: "fb-field" + (hasError ? " has-error" : ""), "data-id": field.id, "data-index": String(index) }, [head, body]);
      return item;
    }

    function render(focusId, focusPart) {
      list.textContent = "";
      state.forEach(function (field, index) { list.appendChild(card(field, index)); });
      sync();
      if (focusId) {
        var target = list.querySelector('[data-id="' + focusId + '"] ' + (focusPart || "input"));
        if (target) target.focus();
      }
    }

    function fieldOf(node) {
      var item = node.closest(".fb-field");
      if (!item) return null;
      var id = item.dataset.id;
      for (var i = 0; i < state.length; i++) if (state[i].id === id) return { field: state[i], index: i, item: item };
      return null;
    }

    form.addEventListener("click", function (event) {
      var add = event.target.closest("[data-add-type]");
      if (add) {
        var type = add.dataset.addType;
        var field = {
          id: newId(), type: type, label: "", placeholder: "", help_text: "", required: false,
          choices: CHOICE[type] ? ["Option 1", "Option 2"] : [], maps_to: defaultTarget(type),
        };
        state.push(field);
        render(field.id, '[data-part="label"]');
        return;
      }
      var hit = fieldOf(event.target);
      if (!hit) return;
      if (event.target.closest("[data-remove]")) {
        state.splice(hit.index, 1);
        render();
      } else if (event.target.closest("[data-move]")) {
        var to = hit.index + Number(event.target.closest("[data-move]").dataset.move);
        if (to < 0 || to >= state.length) return;
        state.splice(to, 0, state.splice(hit.index, 1)[0]);
        render(hit.field.id, "[data-move='" + event.target.closest("[data-move]").dataset.move + "']");
      }
    });

    function update(event) {
      var hit = fieldOf(event.target);
      if (!hit) {
        if (event.target.form === form) document.body.dispatchEvent(new CustomEvent("fb-changed"));
        return;
      }
      var part = event.target.dataset.part;
      if (!part) return;
      if (part === "required") hit.field.required = event.target.checked;
      else if (part === "choices") hit.field.choices = event.target.value.split("\n").map(function (c) { return c.trim(); }).filter(Boolean);
      else hit.field[part] = event.target.value;
      if (part === "label") hit.item.querySelector(".fb-field-title").textContent = event.target.value || "Untitled field";
      sync();
    }
    form.addEventListener("input", update);
    form.addEventListener("change", update);

    if (window.Sortable) {
      window.Sortable.create(list, {
        handle: ".fb-handle",
        animation: 120,
        forceFallback: true, // mouse/touch events instead of native drag-and-drop: same feel everywhere
        onEnd: function (event) {
          if (event.oldIndex === event.newIndex) return;
          state.splice(event.newIndex, 0, state.splice(event.oldIndex, 1)[0]);
          render();
        },
      });
    }

    render();
  });
})();
