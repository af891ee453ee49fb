// Mock interview clock: counts down from the seconds the server says are left (its clock is the
// one that counts: a reload or another device shows the same), turns red in the last quarter, and
// at zero sends what is typed as the answer (go=timeout: kept, marked over time, no follow-up).
// Without JavaScript the page shows the time left when it loaded and the server does the rest.
(function () {
  const timer = document.querySelector("[data-interview-timer]");
  const form = document.getElementById("interview-form");
  if (!timer || !form) return;
  const value = timer.querySelector(".timer-value");
  const end = Date.now() + parseInt(timer.dataset.secondsLeft, 10) * 1000;
  const low = parseInt(timer.dataset.lowSeconds, 10) || 30;
  let sent = false;

  function tick() {
    const left = Math.max(0, Math.round((end - Date.now()) / 1000));
    value.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    timer.classList.toggle("low", left <= low);
    if (left === 0 && !sent) {
      sent = true;
      clearInterval(handle);
      const go = document.createElement("input");
      go.type = "hidden";
      go.name = "go";
      go.value = "timeout";
      form.appendChild(go);
      form.submit(); // a plain submit: the buttons' own go values are not sent
    }
  }
  // Submitting by hand stops the clock from firing a second submit while the next page loads.
  form.addEventListener("submit", () => { sent = true; });
  const handle = setInterval(tick, 1000);
  tick();
})();
