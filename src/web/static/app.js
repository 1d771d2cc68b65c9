// grayscope's dashboard: keeps the overview live without reloading the page or losing the
// selection, and submits the overview's selectors as soon as they change.
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (live) {
    var busy = false;
    setInterval(function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch(live.getAttribute("data-src"), { headers: { Accept: "text/html" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) {
          if (html !== null) {
            live.innerHTML = html; // rendered and escaped by the server
            live.setAttribute("data-refreshed", String(Date.now()));
          }
        })
        .catch(function () {})
        .finally(function () { busy = false; });
    }, 3000);
  }
  var form = document.querySelector("form.auto");
  if (form) {
    var custom = function () {
      var w = form.querySelector("select[name=window]");
      form.querySelectorAll(".custom").forEach(function (el) {
        el.hidden = !w || w.value !== "custom";
      });
    };
    custom();
    form.querySelectorAll("select").forEach(function (s) {
      s.addEventListener("change", function () {
        custom();
        if (s.name !== "window" || s.value !== "custom") form.submit();
      });
    });
  }
})();
