// The live run page: replays then streams the run's numbered events (event-stream.js
// reconnects with ?after=<last seq>, so nothing is missed or shown twice), draws the loss
// curves as events arrive, and keeps progress, status and the log tail current. Closing the
// tab only closes the socket: the run goes on in its worker.
(function () {
  const root = document.getElementById("run-live");
  if (!root) return;
  const $ = (id) => document.getElementById(id);
  const FINAL = ["succeeded", "failed", "cancelled"];
  const chart = TunelabCharts.loss($("loss-chart"));
  const log = $("run-log");
  let finished = null; // the final status, once seen
  log.replaceChildren(); // rebuilt from the replay, which starts at the first event

  const clock = (s) => {
    if (s == null || !isFinite(s)) return "—";
    s = Math.round(s);
    return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
  };
  const num = (x, digits) => (x == null ? "—" : Number(x).toFixed(digits));

  function addLog(text) {
    if (!text) return;
    const item = document.createElement("li");
    item.textContent = text;
    log.appendChild(item);
    while (log.children.length > 200) log.firstElementChild.remove();
    log.scrollTop = log.scrollHeight;
  }

  let lastStep = null; // the latest step event, for the final "… · 6 of 6 steps"
  let startedAt = null; // when the run started (its "running" event), for "succeeded in 2:23"

  function setStatus(status, error, at) {
    if (status === "running" && at && !startedAt) startedAt = Date.parse(at);
    const badge = $("run-status");
    badge.textContent = status;
    badge.dataset.status = status;
    badge.className = `status status-${status}`;
    if (FINAL.includes(status)) {
      // The run is over: nothing is live any more, and a heartbeat time would only look stale.
      finished = status;
      // Nothing is left to wait for: no ETA, the bar full only for a run that completed.
      if (status === "succeeded") $("run-progress").value = 100;
      const took = startedAt && at ? ` in ${clock((Date.parse(at) - startedAt) / 1000)}` : "";
      const steps = lastStep ? ` · ${lastStep.step} of ${lastStep.total_steps} steps` : "";
      $("run-progress-text").textContent = `${status}${took}${steps}`;
      $("cancel-form")?.remove();
      $("run-heartbeat")?.remove();
      $("run-connection").textContent = `${status}: the run has ended, nothing more will arrive`;
    }
    if (error) { $("run-error").textContent = error; $("run-error").hidden = false; }
  }

  function onEvent(event) {
    switch (event.type) {
      case "step": {
        lastStep = event;
        chart.addStep(event.step, event.loss);
        $("run-progress").value = (100 * event.step) / event.total_steps;
        // A range while the estimate is a guess (labs.training.ProgressReport), one value once it is measured.
        const eta = event.eta_low_s != null ? `${clock(event.eta_low_s)}–${clock(event.eta_high_s)}` : clock(event.eta_s);
        if (!finished) $("run-progress-text").textContent =
          `step ${event.step} / ${event.total_steps} · elapsed ${clock(event.elapsed_s)} · ETA ${eta}` +
          ` · ${num(event.samples_per_s, 1)} samples/s · loss ${num(event.loss, 4)}`;
        break;
      }
      case "scoring":
        // After the last step the test split is scored (twice, with the zero-shot baseline): its own progress.
        $("run-progress").value = (100 * event.done_all) / event.total_all;
        if (!finished) $("run-progress-text").textContent =
          `scoring the test split${event.phase === "zero_shot" ? " without the adapter (zero-shot baseline)" : ""}: ` +
          `${event.done} / ${event.total} reviews · ETA ${clock(event.eta_s)}`;
        break;
      case "eval":
        chart.addEval(event.step, event.loss);
        addLog(`validation at step ${event.step}: loss ${num(event.loss, 4)}, accuracy ${num(event.accuracy, 3)}`);
        break;
      case "status":
        setStatus(event.status, event.error, event.t);
        addLog(event.message);
        break;
      default:
        addLog(event.message);
    }
  }

  async function showResults() {
    const box = $("run-results");
    if (box.dataset.loaded === "1") return;
    const response = await fetch(root.dataset.resultsUrl, { headers: { "HX-Request": "true" } });
    if (!response.ok) return;
    box.innerHTML = await response.text();
    box.dataset.loaded = "1";
    TunelabCharts.drawAll(box);
    if (window.htmx) htmx.process(box);
  }

  const states = { connected: "live", reconnecting: "connection lost, reconnecting…", forbidden: "stopped: you may not follow this run (signed out, or not your run); reload the page to sign in again" };
  openEventStream(root.dataset.streamUrl, {
    onEvent,
    onEnd: showResults,
    onStatus: (state) => { if (!finished) $("run-connection").textContent = states[state] || state; },
  });
})();
