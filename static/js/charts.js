// The labs charts, drawn with the vendored uPlot: a run's loss curves (live or finished), the
// training loss of several runs overlaid, and a sweep's metrics against the swept value.
// Elements with data-chart="loss|overlay|sweep" and data-source="<json_script id>" are drawn
// on load and whenever htmx or run-live.js inserts new ones (TunelabCharts.drawAll).
(function () {
  const COLORS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b", "#6d4c41", "#3949ab"];
  const width = (el) => Math.max(260, el.clientWidth || 640);
  const linear = { x: { time: false } };

  // Charts follow their box's width (a phone turned, a window resized): uPlot draws at a fixed size.
  function fit(plot, el) {
    if (!window.ResizeObserver) return plot;
    let last = el.clientWidth;
    new ResizeObserver(() => {
      if (el.clientWidth && el.clientWidth !== last) {
        last = el.clientWidth;
        plot.setSize({ width: width(el), height: plot.height });
      }
    }).observe(el);
    return plot;
  }

  // A run's curves: training loss at every step, validation loss where it ran.
  function loss(el) {
    const train = new Map();
    const validation = new Map();
    let plot = null;
    let pending = false;
    function draw() {
      pending = false;
      const steps = [...new Set([...train.keys(), ...validation.keys()])].sort((a, b) => a - b);
      const data = [steps, steps.map((s) => train.get(s) ?? null), steps.map((s) => validation.get(s) ?? null)];
      el.dataset.points = String(train.size + validation.size);
      if (plot) { plot.setData(data); return; }
      el.replaceChildren();
      plot = fit(new uPlot({
        width: width(el), height: 260, scales: linear,
        series: [
          { label: "step" },
          { label: "training loss", stroke: COLORS[0], spanGaps: true },
          { label: "validation loss", stroke: COLORS[1], spanGaps: true, points: { show: true, size: 7 } },
        ],
        axes: [{ label: "step" }, { label: "loss" }],
      }, data, el), el);
    }
    // Many events can arrive at once (a replay): draw at most once per frame.
    const schedule = () => { if (!pending) { pending = true; requestAnimationFrame(draw); } };
    return {
      addStep(step, value) { train.set(step, value); schedule(); },
      addEval(step, value) { validation.set(step, value); schedule(); },
    };
  }

  // Several runs' training loss on one step axis.
  function overlay(el, runs) {
    const withData = runs.filter((r) => r.train.length);
    if (!withData.length) { el.textContent = "No training steps recorded yet."; return; }
    const tables = withData.map((r) => [r.train.map((p) => p[0]), r.train.map((p) => p[1])]);
    const data = uPlot.join(tables);
    el.replaceChildren();
    fit(new uPlot({
      width: width(el), height: 280, scales: linear,
      series: [{ label: "step" }, ...withData.map((r, i) => ({ label: r.name, stroke: COLORS[i % COLORS.length], spanGaps: true }))],
      axes: [{ label: "step" }, { label: "training loss" }],
    }, data, el), el);
  }

  // A sweep: accuracy and macro-F1 against the swept value, and calibration (ECE, mean
  // confidence) where the runs recorded it.
  function sweep(el, points, xLabel) {
    el.replaceChildren();
    const series = [
      { label: xLabel },
      { label: "accuracy", stroke: COLORS[0], points: { show: true, size: 8 } },
      { label: "macro-F1", stroke: COLORS[2], points: { show: true, size: 8 } },
    ];
    const data = [points.map((p) => p.x), points.map((p) => p.accuracy), points.map((p) => p.macro_f1)];
    if (points.some((p) => p.ece != null)) {
      series.push({ label: "ECE", stroke: COLORS[1], dash: [6, 4], points: { show: true, size: 8 } });
      series.push({ label: "mean confidence", stroke: COLORS[4], dash: [2, 3], points: { show: true, size: 8 } });
      data.push(points.map((p) => p.ece), points.map((p) => p.mean_confidence));
    }
    fit(new uPlot({
      width: width(el), height: 240, scales: { x: { time: false }, y: { range: [0, 1] } },
      series, axes: [{ label: xLabel }, { label: "test metric" }],
    }, data, el), el);
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-chart]:not([data-drawn])").forEach((el) => {
      const source = document.getElementById(el.dataset.source);
      if (!source) return;
      const data = JSON.parse(source.textContent);
      el.dataset.drawn = "1";
      if (el.dataset.chart === "loss") {
        const chart = loss(el);
        data.train.forEach(([step, value]) => chart.addStep(step, value));
        data.validation.forEach(([step, value]) => chart.addEval(step, value));
      } else if (el.dataset.chart === "overlay") {
        overlay(el, data);
      } else if (el.dataset.chart === "sweep") {
        sweep(el, data, el.dataset.xLabel || "value");
      }
    });
  }

  window.TunelabCharts = { loss, overlay, sweep, drawAll };
  document.addEventListener("DOMContentLoaded", () => drawAll(document));
  document.addEventListener("htmx:afterSettle", (event) => drawAll(event.target));
})();
