// Quiz countdown: shows mm:ss left and reloads at zero; the server then submits the attempt.
// Without JavaScript the page shows the minutes left at load time and the end time.
(function () {
  const timer = document.querySelector(".timer[data-deadline]");
  if (!timer) return;
  const deadline = Date.parse(timer.dataset.deadline);
  const value = timer.querySelector(".timer-value");
  function tick() {
    const left = Math.max(0, Math.round((deadline - Date.now()) / 1000));
    value.textContent = `${Math.floor(left / 60)}:${String(left % 60).padStart(2, "0")}`;
    if (left === 0) {
      clearInterval(handle);
      setTimeout(() => window.location.reload(), 1500); // let a pending autosave land first
    }
  }
  const handle = setInterval(tick, 1000);
  tick();
})();
