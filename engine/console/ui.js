// Small DOM helpers shared by every view: element building, progress, notices, confirmation, dates.

/** h("button", {class: "primary", onclick}, "Save") -> element; children may be strings, nodes, arrays, null. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "value") el.value = value;
    else if (key === "checked") el.checked = Boolean(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replace an element's content. */
export function fill(el, ...children) {
  el.replaceChildren();
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

let busyCount = 0;

/** Show `label` in the progress bar while `promise` runs; resolves to its result. */
export async function busy(label, promise) {
  const bar = document.getElementById("busy");
  busyCount += 1;
  bar.textContent = `${label}…`;
  bar.hidden = false;
  try {
    return await promise;
  } finally {
    busyCount -= 1;
    if (busyCount === 0) bar.hidden = true;
  }
}

/** A message at the top of the page: kind "error" (an ApiProblem's userMessage) or "ok". */
export function notify(message, kind = "ok") {
  const box = document.getElementById("notice");
  box.textContent = message;
  box.className = kind;
  box.hidden = false;
  clearTimeout(notify.timer);
  if (kind === "ok") notify.timer = setTimeout(() => { box.hidden = true; }, 4000);
}

export function clearNotice() {
  document.getElementById("notice").hidden = true;
}

/** Run an action; on failure show the user's words (never raw JSON) and return undefined. */
export async function attempt(label, action) {
  try {
    clearNotice();
    return await busy(label, action());
  } catch (err) {
    notify(err.userMessage || err.message || String(err), "error");
    return undefined;
  }
}

export function confirmAction(message) {
  return window.confirm(message);
}

export function formatDate(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export function formatCount(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString();
}

export const OBJECT_TYPES = ["contact", "company", "deal", "ticket", "task", "product"];

/** Labelled form field: field("Name", input) */
export function field(label, control, hint) {
  const id = control.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  control.id = id;
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("small", {}, hint) : null);
}

/** Go to a view: go("segment", id) -> #/segment/<id> */
export function go(...parts) {
  location.hash = "#/" + parts.map((p) => encodeURIComponent(p)).join("/");
}

/** A small square of the segment's colour (an empty outlined one when it has none). */
export function swatch(colour) {
  const el = h("span", { class: colour ? "swatch" : "swatch none", "aria-hidden": "true" });
  if (colour) el.style.background = colour;
  return el;
}

/** Save a fetched Response as a file: the API needs the token, so a plain link cannot download it. */
export async function saveResponse(response, fileName) {
  const url = URL.createObjectURL(await response.blob());
  const link = h("a", { href: url, download: fileName, hidden: true });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
