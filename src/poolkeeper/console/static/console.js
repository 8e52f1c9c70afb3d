// poolkeeper console: refresh the page body every few seconds (pages work without this).
(function () {
  "use strict";
  var period = Number(document.body.getAttribute("data-refresh") || 0) * 1000;
  var box = document.getElementById("auto");
  if (!period || !box) { return; }
  try { box.checked = localStorage.getItem("poolkeeper-live") !== "off"; } catch (e) { /* private mode */ }
  box.addEventListener("change", function () {
    try { localStorage.setItem("poolkeeper-live", box.checked ? "on" : "off"); } catch (e) { /* ignore */ }
  });
  var busy = false;
  function refresh() {
    if (busy || !box.checked || document.hidden) { return; }
    var main = document.getElementById("main");
    // Keep open <details> (stacks, configuration) and the scroll position across refreshes.
    var open = Array.prototype.map.call(main.querySelectorAll("details[open][id]"),
                                        function (d) { return d.id; });
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    busy = true;
    fetch(url.toString(), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null) { return; }
        main.innerHTML = html;
        open.forEach(function (id) { var d = document.getElementById(id); if (d) { d.open = true; } });
      })
      .catch(function () { /* the console stopped: keep the last view */ })
      .then(function () { busy = false; });
  }
  setInterval(refresh, period);
})();
