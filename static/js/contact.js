// Contact page: composer tabs and the upload size check (the server checks again).
(function () {
  "use strict";
  var tabs = document.querySelectorAll('.tabs [role="tab"]');
  tabs.forEach(function (tab) {
    tab.addEventListener("click", function () {
      tabs.forEach(function (other) {
        var selected = other === tab;
        other.setAttribute("aria-selected", selected ? "true" : "false");
        document.getElementById(other.getAttribute("aria-controls")).hidden = !selected;
      });
    });
  });

  var input = document.getElementById("file-input");
  if (input) {
    input.addEventListener("change", function () {
      var error = document.getElementById("file-error");
      var max = parseInt(input.dataset.max, 10);
      var file = input.files[0];
      if (file && max && file.size > max) {
        error.textContent = "This file is larger than the limit.";
        input.setCustomValidity("Too large");
      } else {
        error.textContent = "";
        input.setCustomValidity("");
      }
    });
  }

  // Trix would accept pasted files; notes are text only (files go through the File tab).
  document.addEventListener("trix-file-accept", function (event) { event.preventDefault(); });
})();
