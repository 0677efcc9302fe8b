// Progressive enhancement only: every page works without it.
// Copy buttons, confirmations before destructive forms, chart bar widths, provisioning refresh.
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", async () => {
    const input = document.getElementById(button.dataset.copy);
    input.select();
    try {
      await navigator.clipboard.writeText(input.value);
      button.textContent = "Copied";
    } catch {
      button.textContent = "Press Ctrl+C";
    }
  });
}
for (const form of document.querySelectorAll("form[data-confirm]")) {
  form.addEventListener("submit", (event) => {
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });
}
for (const bar of document.querySelectorAll(".bar[data-width]")) {
  bar.style.width = `${Number(bar.dataset.width)}%`;
}
const reload = document.querySelector("[data-autoreload]");
if (reload) setTimeout(() => window.location.reload(), Number(reload.dataset.autoreload));
