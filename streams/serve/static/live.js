// dbopt serve: live updates without a reload. The server's event stream (/events) names what
// changed (windows, alerts, notifications, optimizations, pools); when the page's live part
// (#live, data-kinds) shows one of them, it is fetched again and swapped in.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var badge = document.getElementById("live-status");
  function show(state, text) {
    if (!badge) { return; }
    badge.textContent = text;
    badge.className = "live-status live-" + state;
  }
  if (!live || !window.EventSource) { show("off", "static"); return; }
  var kinds = (live.getAttribute("data-kinds") || "").split(" ");
  var busy = false, again = false, timer = null;

  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(window.location.href, { headers: { "X-Dbopt-Fragment": "1" }, credentials: "same-origin" })
      .then(function (answer) {
        if (answer.status === 401 || answer.redirected) { window.location.reload(); return null; }
        return answer.ok ? answer.text() : null;
      })
      .then(function (html) {
        if (html !== null && html !== undefined) {
          live.innerHTML = html;
          live.setAttribute("data-updated", String(Date.now()));
        }
      })
      .catch(function () { show("down", "reconnecting…"); })
      .then(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  var source = new EventSource("/events");
  // Whatever changed before the stream opened (between the page's render and its first connection,
  // or while it reconnected) was announced to nobody: each opening fetches the live block once.
  source.onopen = function () { show("on", "live"); refresh(); };
  source.onerror = function () { show("down", "reconnecting…"); };
  source.addEventListener("update", function (event) {
    var changed = [];
    try { changed = JSON.parse(event.data); } catch (e) { return; }
    if (!changed.some(function (kind) { return kinds.indexOf(kind) >= 0; })) { return; }
    if (timer) { clearTimeout(timer); }
    timer = setTimeout(refresh, 100);
  });
  var selected = document.getElementById("selected");
  if (selected) { selected.scrollIntoView({ block: "center" }); }
})();
