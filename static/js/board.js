// Pipeline board: drag a card to another column; the server moves the contact (same service as the API).
(function () {
  "use strict";
  var board = document.getElementById("board");
  if (!board || typeof Sortable === "undefined") return;
  var csrf = JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"];

  function bump(stageId, delta) {
    var badge = board.querySelector('[data-count-for="' + stageId + '"]');
    if (badge) badge.textContent = String(Math.max(0, parseInt(badge.textContent, 10) + delta));
  }

  board.querySelectorAll(".board-cards").forEach(function (column) {
    Sortable.create(column, {
      group: "board",
      animation: 150,
      draggable: ".board-card",
      filter: ".board-more",
      onEnd: function (event) {
        if (event.from === event.to) return;
        var card = event.item;
        var body = new URLSearchParams();
        body.set("contact", card.dataset.contact);
        body.set("stage", event.to.dataset.stage);
        card.setAttribute("aria-busy", "true");
        fetch(board.dataset.moveUrl, {
          method: "POST",
          headers: { "X-CSRFToken": csrf, "Content-Type": "application/x-www-form-urlencoded" },
          body: body,
          credentials: "same-origin",
        }).then(function (response) {
          if (!response.ok) {
            // A plain-text answer says why (a stage deleted meanwhile); anything else is the generic message.
            var plain = (response.headers.get("Content-Type") || "").indexOf("text/plain") === 0;
            return (plain ? response.text() : Promise.resolve("")).then(function (why) { throw new Error(why); });
          }
          return response.text();
        }).then(function (html) {
          var holder = document.createElement("div");
          holder.innerHTML = html.trim();
          var fresh = holder.firstElementChild;
          fresh.dataset.moved = "true";
          card.replaceWith(fresh);
          bump(event.from.dataset.stage, -1);
          bump(event.to.dataset.stage, +1);
        }).catch(function (error) {
          // Put the card back where it was and say so.
          event.from.insertBefore(card, event.from.children[event.oldIndex] || null);
          card.removeAttribute("aria-busy");
          window.alert((error && error.message) || "The card could not be moved. Reload the page and try again.");
        });
      },
    });
  });
})();
