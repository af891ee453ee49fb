// Playground: a result belongs to the model that produced it. Choosing another model (or
// editing the text) clears the shown result, so "Run 1 says negative" never sits under Qwen.
(function () {
  function clearResults() {
    const results = document.getElementById("playground-results");
    if (results) results.replaceChildren();
  }
  document.addEventListener("DOMContentLoaded", () => {
    const target = document.getElementById("id_target");
    if (target) target.addEventListener("change", clearResults);
    // A new request replaces the old answer at once: no stale result while the next one runs.
    const form = document.getElementById("playground-form");
    if (form) form.addEventListener("htmx:beforeRequest", clearResults);
  });
})();
