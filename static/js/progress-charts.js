// The progress page's charts over time, drawn with the vendored uPlot: mastery per topic (lines),
// cards due ahead and lab runs per day (bars), mock-interview scores (points). Each chart reads
// its data from a json_script; the server writes a plain-text summary beside each, so the page
// says the same without JavaScript. Dates are shown in the site's time zone, as the server counted them.
(function () {
  const COLORS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00897b"];
  const zoneEl = document.getElementById("progress-timezone");
  const zone = zoneEl ? JSON.parse(zoneEl.textContent) : "UTC";
  const tzDate = (ts) => uPlot.tzDate(new Date(ts * 1e3), zone);
  const width = (el) => Math.max(240, el.clientWidth || 600);
  const pct = (u, v) => (v == null ? "–" : `${Math.round(v * 100)}%`);
  const dayAxis = { values: "{MMM} {D}", space: 48 };
  // Half a day either side, so the first and last bars (and points) are drawn whole.
  const padded = { time: true, range: (u, min, max) => [min - 43200, max + 43200] };

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

  const draw = {
    lines(el, data) {
      if (!data.series.length) return;
      return new uPlot({
        width: width(el), height: 240, tzDate, scales: { y: { range: [0, 1] } },
        series: [{ label: "day", value: "{MMM} {D}" },
          ...data.series.map((s, i) => ({ label: s.label, stroke: COLORS[i % COLORS.length], width: 2, value: pct }))],
        axes: [dayAxis, { values: (u, ticks) => ticks.map((v) => `${Math.round(v * 100)}%`), size: 48 }],
      }, [data.x, ...data.series.map((s) => s.values)], el);
    },
    bars(el, data) {
      const max = Math.max(1, ...data.values);
      return new uPlot({
        width: width(el), height: 200, tzDate, scales: { x: padded, y: { range: [0, max + 1] } },
        series: [{ label: "day", value: "{MMM} {D}" },
          { label: el.dataset.label, fill: "#90caf9", stroke: "#1e88e5", paths: uPlot.paths.bars({ size: [0.7, 40] }),
            points: { show: false } }],
        axes: [dayAxis, { size: 36, incrs: [1, 2, 5, 10, 20, 50, 100] }],
      }, [data.x, data.values], el);
    },
    points(el, data) {
      if (!data.values.length) return;
      return new uPlot({
        width: width(el), height: 220, tzDate, scales: { x: padded, y: { range: [0, 1] } },
        series: [{ label: "finished", value: "{MMM} {D} {HH}:{mm}" },
          { label: el.dataset.label, stroke: COLORS[0], width: 1, points: { show: true, size: 9, fill: COLORS[0] }, value: pct }],
        axes: [dayAxis, { values: (u, ticks) => ticks.map((v) => `${Math.round(v * 100)}%`), size: 48 }],
      }, [data.x, data.values], el);
    },
  };

  function drawAll() {
    document.querySelectorAll("[data-progress-chart]:not([data-drawn])").forEach((el) => {
      const source = document.getElementById(el.dataset.source);
      if (!source || !window.uPlot) return;
      const plot = draw[el.dataset.progressChart](el, JSON.parse(source.textContent));
      if (!plot) return;
      el.dataset.drawn = "1";
      el.querySelectorAll(":scope > p").forEach((p) => p.remove());
      fit(plot, el);
    });
  }
  document.addEventListener("DOMContentLoaded", drawAll);
})();
