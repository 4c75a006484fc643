// Live progress for the jobs page and a job page: polls the JSON API, updates the page in place.
(function () {
  "use strict";
  var ACTIVE = ["queued", "planning", "running"];
  var FAST = 1500, SLOW = 5000;  // ms between polls while something runs / while all is quiet

  function isActive(status) { return ACTIVE.indexOf(status) >= 0; }
  function int(n) { return n == null ? "–" : Number(n).toLocaleString("en"); }
  function pct(f, digits) { return f == null ? "–" : (f * 100).toFixed(digits || 0) + " %"; }
  function rate(r) { return r == null ? "–" : (r < 100 ? r.toFixed(1) : Math.round(r).toLocaleString("en")) + "/s"; }
  function duration(s) {
    if (s == null) return "–";
    var w = Math.round(s);
    if (w < 60) return s < 10 ? s.toFixed(1) + " s" : w + " s";
    if (w < 3600) return Math.floor(w / 60) + " min " + (w % 60) + " s";
    return Math.floor(w / 3600) + " h " + Math.floor((w % 3600) / 60) + " min";
  }

  function set(root, field, text) {
    root.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) { el.textContent = text; });
  }

  function setPct(root, field, fraction) {
    root.querySelectorAll('[data-field="' + field + '"]').forEach(function (el) {
      el.textContent = pct(fraction, Number(el.getAttribute("data-digits") || 0));
    });
  }

  function update(root, job) {
    var bar = root.querySelector('progress[data-field="progress"]');
    if (bar) {
      if (job.progress == null) { bar.removeAttribute("value"); }
      else { bar.value = Math.round(job.progress * 1000) / 10; }
      bar.textContent = pct(job.progress);
    }
    set(root, "progress-text", pct(job.progress));
    set(root, "done", int(job.scored + job.failed));
    ["total", "scored", "failed", "flagged"].forEach(function (k) { set(root, k, int(job[k])); });
    set(root, "images_per_second", rate(job.images_per_second));
    set(root, "eta_seconds", isActive(job.status) ? duration(job.eta_seconds) : "–");
    set(root, "seconds", duration(job.seconds));
    setPct(root, "recall", job.recall);
    setPct(root, "specificity", job.specificity);
    root.querySelectorAll('[data-field="status"]').forEach(function (el) {
      el.textContent = job.status;
      el.className = "status status-" + job.status;
    });
    if (job.confusion) {
      Object.keys(job.confusion).forEach(function (cell) {
        document.querySelectorAll('[data-cell="' + cell + '"]').forEach(function (el) { el.textContent = job.confusion[cell]; });
      });
    }
  }

  function poll(url, handle) {
    fetch(url, { headers: { "Accept": "application/json" }, credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 401) { window.location.reload(); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (data) { setTimeout(function () { poll(url, handle); }, data ? handle(data) : SLOW); })
      .catch(function () { setTimeout(function () { poll(url, handle); }, SLOW); });
  }

  // the parts of a job page that counters cannot update (the matrix once it appears, flagged and
  // missed images, details, studies, batches): drawn again from the server when the job's counts
  // moved, at most every REDRAW ms
  var REDRAW = 5000, drawnAt = Date.now(), drawnFor = null;
  function progressKey(job) {
    return [job.status, job.scored, job.failed, job.flagged, job.batches.done, job.batches.failed].join(",");
  }
  function redraw(job) {
    var key = progressKey(job);
    if (drawnFor === null) { drawnFor = key; return; }
    if (key === drawnFor || Date.now() - drawnAt < REDRAW) { return; }
    drawnFor = key;
    drawnAt = Date.now();
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        fresh.querySelectorAll("[data-live]").forEach(function (part) {
          var here = document.querySelector('[data-live="' + part.getAttribute("data-live") + '"]');
          if (here) { here.replaceWith(document.importNode(part, true)); }
        });
      })
      .catch(function () { drawnFor = null; });
  }

  function watchJob(section) {
    var shown = section.getAttribute("data-status");
    poll(section.getAttribute("data-url"), function (job) {
      update(document, job);
      if (isActive(job.status)) { redraw(job); }
      // the job finished since the page was drawn: draw it again for the final matrix and images
      if (isActive(shown) && !isActive(job.status)) { window.location.reload(); }
      return isActive(job.status) ? FAST : SLOW * 6;
    });
  }

  function watchJobs(table) {
    poll(table.getAttribute("data-url"), function (data) {
      var busy = false, known = true;
      data.jobs.forEach(function (job) {
        var row = table.querySelector('tr[data-job-id="' + job.id + '"]');
        if (!row) { known = false; return; }
        row.setAttribute("data-status", job.status);
        update(row, job);
        busy = busy || isActive(job.status);
      });
      if (!known) { window.location.reload(); }  // a new job arrived: redraw the list
      return busy ? FAST : SLOW;
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var job = document.querySelector('[data-poll="job"]');
    if (job) { watchJob(job); }
    var jobs = document.querySelector('[data-poll="jobs"]');
    if (jobs) { watchJobs(jobs); }
  });
})();
