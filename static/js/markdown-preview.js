// Admin: live markdown preview of a question. As the curator types in prompt, hint or answer,
// the fields are posted (debounced) to a staff-only endpoint that renders them with the site's
// own markdown renderer and sanitizer, so the preview is exactly what learners will see.
(function () {
  const FIELDS = ["prompt", "hint", "answer"];
  let timer = null;
  let latest = 0;

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  async function refresh(box) {
    const body = new URLSearchParams();
    for (const name of FIELDS) {
      const field = document.getElementById(`id_${name}`);
      body.append(name, field ? field.value : "");
    }
    const mine = ++latest;
    const response = await fetch(box.dataset.url, {
      method: "POST", body, credentials: "same-origin",
      headers: {"X-CSRFToken": csrfToken(), "Content-Type": "application/x-www-form-urlencoded"},
    });
    if (response.ok && mine === latest) {  // an older, slower answer never overwrites a newer one
      box.innerHTML = await response.text();  // sanitized by the server (nh3), like every page
      box.dataset.updated = String(mine);
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    const box = document.getElementById("quiz-preview");
    if (!box) return;
    for (const name of FIELDS) {
      const field = document.getElementById(`id_${name}`);
      if (!field) continue;
      field.addEventListener("input", () => {
        clearTimeout(timer);
        timer = setTimeout(() => refresh(box), 300);
      });
    }
  });
})();
