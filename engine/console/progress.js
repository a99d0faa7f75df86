// Following the worker while it re-checks every stored record (a new or edited segment filling, a
// recalculation): a bar and a status line drawn from /health until the work is done. Only this worker's
// share of the records is seen (the page may talk to no other host).
import { fill, formatCount, h } from "./ui.js";

const POLL_MS = 500;
const QUIET_POLLS = 2; // polls in a row with nothing left before the work counts as done
const LAG_COUNTS_MS = 10_000;

const total = (figures) => Object.values(figures || {}).reduce((a, b) => a + b, 0);

/**
 * Draw a heading, a bar and a status line into `panel` (shown) and poll /health until done, then fill
 * the bar and call `onDone(status)` to write the outcome into the status line (which then gets the
 * class "done"). `statusClass` names the status line for tests and styles. Returns a function that
 * stops following (call it before following again or when the view goes away).
 */
export function followProgress(panel, { title, label, waiting, statusClass, onDone }) {
  const status = h("p", { class: statusClass }, waiting);
  const bar = h("progress", { "aria-label": label });
  panel.hidden = false;
  fill(panel, h("h2", {}, title), bar, status);
  let timer = null;
  let stopped = false;
  let quiet = 0;
  let most = 0;
  const started = Date.now();
  const poll = async () => {
    let health;
    try {
      health = await (await fetch("/health")).json();
    } catch (err) {
      if (!stopped) status.textContent = "The worker cannot be reached to follow the progress.";
      return;
    }
    if (stopped) return;
    // Done when nothing is left to check and nothing is waiting to be applied (the change that starts
    // the work travels as a message: until it is applied it shows as lag), twice in a row. Under
    // steady traffic the lag never reaches 0, so after 10 s only the records left to check count.
    const left = total(health.backfill_pending);
    const queued = Date.now() - started < LAG_COUNTS_MS ? total(health.lag) : 0;
    most = Math.max(most, left);
    quiet = left || queued ? 0 : quiet + 1;
    if (quiet < QUIET_POLLS) {
      if (most) { bar.max = most; bar.value = most - left; }
      status.textContent = left ? `${formatCount(left)} records left to check…` : waiting;
      timer = setTimeout(poll, POLL_MS);
      return;
    }
    bar.max = 1; bar.value = 1;
    await onDone(status);
    status.classList.add("done");
  };
  poll();
  return () => { stopped = true; clearTimeout(timer); };
}
