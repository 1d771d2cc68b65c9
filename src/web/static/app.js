// grayscope's dashboard: keeps the overview live without reloading the page or losing the
// selection, submits the overview's selectors as soon as they change, and completes service
// names in the search box of every page.
(function () {
  "use strict";
  var names = document.getElementById("service-names");
  if (names) {
    var timer = null, asked = null;
    var complete = function (input) {
      var q = input.value.trim();
      if (q === asked) return;
      asked = q;
      fetch("/complete/services?q=" + encodeURIComponent(q), { headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : []; })
        .then(function (list) {
          if (q !== asked) return;
          names.replaceChildren.apply(names, list.map(function (n) {
            var o = document.createElement("option");
            o.value = n; // text, never markup
            return o;
          }));
          names.setAttribute("data-for", q);
        })
        .catch(function () {});
    };
    document.querySelectorAll("input[list=service-names]").forEach(function (input) {
      var ask = function () {
        clearTimeout(timer);
        timer = setTimeout(function () { complete(input); }, 120);
      };
      input.addEventListener("input", ask);
      input.addEventListener("focus", ask);
    });
  }
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
