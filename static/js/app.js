// Small progressive enhancements shared by every page; pages work without them.
(function () {
  "use strict";

  function onReady(fn) {
    if (document.readyState !== "loading") fn();
    else document.addEventListener("DOMContentLoaded", fn);
  }

  onReady(function () {
    var toggle = document.querySelector(".nav-toggle");
    if (toggle) {
      toggle.addEventListener("click", function () {
        var bar = toggle.closest(".topbar");
        var open = bar.classList.toggle("nav-open");
        toggle.setAttribute("aria-expanded", open ? "true" : "false");
      });
    }
    syncNeedsValue();
    document.querySelectorAll("[data-bulk-action]").forEach(function (select) { syncBulk(select.form); });
    rememberListAndPointBackToIt();
    focusFirstError(document);
  });

  // A form sent back with errors: focus its first wrong field, so keyboard and screen-reader users
  // land on it (its message is tied to it by aria-describedby) instead of at the top of the page.
  function focusFirstError(root) {
    var field = root.querySelector("form .has-error input:not([type=hidden]), form .has-error select, form .has-error textarea");
    if (field) field.focus();
  }
  document.addEventListener("htmx:afterSwap", function () { focusFirstError(document); });

  document.addEventListener("click", function (event) {
    var dismiss = event.target.closest("[data-dismiss]");
    if (dismiss) dismiss.parentElement.remove();
    // Close open menus when clicking elsewhere.
    document.querySelectorAll("details.usermenu[open], details.dropdown[open]").forEach(function (menu) {
      if (!menu.contains(event.target)) menu.removeAttribute("open");
    });
  });

  // A dropdown panel that would run past the right edge of the window opens towards the left.
  document.addEventListener("toggle", function (event) {
    var menu = event.target;
    if (!menu.matches || !menu.matches("details.dropdown") || !menu.open) return;
    var panel = menu.querySelector(".dropdown-panel");
    if (!panel) return;
    panel.classList.remove("align-right");
    if (panel.getBoundingClientRect().right > document.documentElement.clientWidth - 8) {
      panel.classList.add("align-right");
    }
  }, true);

  document.addEventListener("change", function (event) {
    // "Select all" checkboxes: data-check-all="name" toggles every checkbox called name.
    var all = event.target.closest("[data-check-all]");
    if (all) {
      document.querySelectorAll('input[type=checkbox][name="' + all.dataset.checkAll + '"]').forEach(function (box) {
        box.checked = all.checked;
      });
    }
    if (event.target.matches("[data-bulk-action]")) syncBulk(event.target.form);
    syncNeedsValue();
  });

  // --- Buttons that need a value first: data-needs-value="#select" ---------------------------
  function syncNeedsValue() {
    document.querySelectorAll("[data-needs-value]").forEach(function (button) {
      var control = document.querySelector(button.dataset.needsValue);
      if (control) button.disabled = !control.value;
    });
  }

  // --- Bulk actions: only the chosen action's value control, and a question before a big change ---
  function syncBulk(form) {
    if (!form) return;
    var action = form.querySelector("[data-bulk-action]").value;
    form.querySelectorAll("[data-bulk-for]").forEach(function (control) {
      var used = control.dataset.bulkFor.split(" ").indexOf(action) >= 0;
      control.hidden = !used;
      control.disabled = !used;
      control.required = used;
    });
  }

  function plural(n, word) {
    return n.toLocaleString("en-US") + " " + word + (n === 1 ? "" : "s");
  }

  function chosenText(form, name) {
    var select = form.querySelector('select[name="' + name + '"]');
    return select && select.selectedOptions.length ? select.selectedOptions[0].textContent.trim() : "";
  }

  function bulkQuestion(form) {
    var select = form.querySelector("[data-bulk-action]");
    var action = select ? select.value : "";
    if (!action) return "";
    var scope = form.querySelector("input[name=scope]:checked");
    var all = scope && scope.value === "all";
    var whom;
    if (all) {
      var total = parseInt(form.dataset.total, 10) || 0;
      whom = (form.dataset.totalExact ? "" : "about ") + plural(total, "matching contact");
      if (total > parseInt(form.dataset.limit, 10)) whom += " (a bulk action takes at most " + parseInt(form.dataset.limit, 10).toLocaleString("en-US") + ")";
    } else {
      var picked = document.querySelectorAll('input[name=ids][form="' + form.id + '"]:checked').length;
      if (!picked) return "";
      whom = plural(picked, "selected contact");
    }
    var destructive = action === "assign_owner" || action === "remove_tag" || action === "move_stage";
    if (!all && !destructive) return "";
    var questions = {
      assign_owner: "Set the owner of " + whom + " to “" + chosenText(form, "owner") + "”?",
      add_tag: "Add the tag “" + chosenText(form, "tag") + "” to " + whom + "?",
      remove_tag: "Remove the tag “" + chosenText(form, "tag") + "” from " + whom + "?",
      move_stage: "Move " + whom + " to the stage “" + chosenText(form, "stage") + "”?",
      export_csv: "Export " + whom + " as CSV?",
      export_xlsx: "Export " + whom + " as XLSX?",
    };
    var question = questions[action] || "Apply “" + chosenText(form, "action") + "” to " + whom + "?";
    return action.indexOf("export") === 0 ? question : question + " This changes every one of them at once.";
  }

  // --- Submitting: confirm where asked, then send a form once -------------------------------------
  // A POST form is locked when it submits: a second click or Enter does nothing and its buttons are
  // disabled until the page is left. Coming back (history, bfcache) unlocks it and gives it a new
  // submission token (the server runs each token once). Forms marked data-no-lock stay usable
  // (the bulk form: an export answers with a file and the page stays).
  function submitButtons(form) {
    return Array.prototype.filter.call(form.elements, function (el) {
      return (el.tagName === "BUTTON" && (el.type || "submit") === "submit") || (el.tagName === "INPUT" && el.type === "submit");
    });
  }

  function disableButtons(form) {
    submitButtons(form).forEach(function (button) {
      if (!button.disabled) {
        button.disabled = true;
        button.dataset.lockedBySubmit = "1";
      }
    });
  }

  function enableButtons(form) {
    submitButtons(form).forEach(function (button) {
      if (button.dataset.lockedBySubmit) {
        button.disabled = false;
        delete button.dataset.lockedBySubmit;
      }
    });
  }

  function unlock(form) {
    delete form.dataset.submitting;
    enableButtons(form);
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.dataset.submitting) {
      event.preventDefault();
      return;
    }
    var submitter = event.submitter;
    var message = (submitter && submitter.dataset.confirm) || form.dataset.confirm ||
      (form.querySelector("[data-bulk-action]") ? bulkQuestion(form) : "");
    if (message && !window.confirm(message)) {
      event.preventDefault();
      return;
    }
    // HTMX takes its forms over (it cancels the native submit): those lock through its events below.
    if (event.defaultPrevented || form.method.toLowerCase() !== "post" || form.hasAttribute("data-no-lock")) return;
    form.dataset.submitting = "1";
    // Disabled after this event: the browser reads the form data (the clicked button's name and
    // value too) once the submit event is over, and a disabled button would be left out.
    window.setTimeout(function () { disableButtons(form); }, 0);
  });

  function randomToken() {
    var bytes = new Uint8Array(18);
    window.crypto.getRandomValues(bytes);
    return btoa(String.fromCharCode.apply(null, bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  window.addEventListener("pageshow", function (event) {
    var navigation = window.performance && performance.getEntriesByType ? performance.getEntriesByType("navigation")[0] : null;
    var fromHistory = event.persisted || (navigation && navigation.type === "back_forward");
    if (!fromHistory) return;
    document.querySelectorAll("form[data-submitting]").forEach(unlock);
    // The page shown again is a new chance to submit: a new token, not the one already used.
    document.querySelectorAll('input[name="submission_token"]').forEach(function (input) { input.value = randomToken(); });
    syncNeedsValue();
  });

  function requestForm(event) {
    var elt = event.detail && event.detail.elt;
    return elt && elt.tagName === "FORM" ? elt : null;
  }

  document.addEventListener("htmx:beforeRequest", function (event) {
    var form = requestForm(event);
    if (form) disableButtons(form);
  });
  // After success (the form is usually replaced) and after errors alike: usable again.
  document.addEventListener("htmx:afterRequest", function (event) {
    var form = requestForm(event);
    if (form) enableButtons(form);
  });

  // --- "← Contacts" returns to the list as it was (filters, sort, view) ----------------------------
  var LIST_KEY = "crm:contact-list";

  function rememberListAndPointBackToIt() {
    try {
      if (document.getElementById("list-form")) {
        window.sessionStorage.setItem(LIST_KEY, location.pathname + location.search);
      }
      var back = document.querySelector("[data-back-to-list]:not([data-back-given])");
      var url = back && window.sessionStorage.getItem(LIST_KEY);
      if (url && /^\/contacts\/(\?[^\\]*)?$/.test(url)) back.setAttribute("href", url);
    } catch (error) {
      // No sessionStorage (privacy mode): the link keeps what the server gave it.
    }
  }
})();
