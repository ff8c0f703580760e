// Public form: move focus to the error summary so screen-reader and keyboard users hear what to fix.
(function () {
  "use strict";
  var summary = document.getElementById("pf-summary");
  if (summary) summary.focus();
  var form = document.querySelector(".pf-form");
  if (form) {
    form.addEventListener("submit", function () {
      var button = form.querySelector(".pf-submit");
      // Stops double submissions from an impatient second click.
      if (button) window.setTimeout(function () { button.disabled = true; button.textContent = "Sending…"; }, 0);
    });
  }
})();
