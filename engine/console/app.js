// The console shell: sign-in with a bearer token, the workspace, the navigation and a hash router that
// loads one view module per route. A view module exports `render(root, params)`; it may return a
// function that the router calls when the user leaves the view (to close a live connection).
import { ApiProblem, get, saveToken, saveWorkspace, session } from "./api.js";
import { clearNotice, fill, h, notify } from "./ui.js";

// route -> [module, navigation label or null when the view is reached from another view]
const ROUTES = {
  segments: ["./view-segments.js", "Segments"],
  manage: ["./view-manage.js", "Management"],
  builder: ["./view-builder.js", "Builder"],
  segment: ["./view-segment.js", null],
  record: ["./view-record.js", "Records"],
  static: ["./view-static.js", "Static segments"],
  assignment: ["./view-assignment.js", "Chat assignment"],
  defaults: ["./view-defaults.js", "Defaults"],
  feed: ["./view-feed.js", "Live feed"],
};
const HOME = "segments";

let leaveView = null;

function signInForm(message) {
  const input = h("input", { id: "token", type: "password", autocomplete: "off", placeholder: "e.g. demo-admin-token", required: true });
  const form = h("form", { class: "signin", onsubmit: async (event) => {
    event.preventDefault();
    saveToken(input.value.trim());
    await start();
  } },
  h("h1", {}, "Sign in"),
  h("p", {}, "Paste the bearer token your administrator gave you. It is kept in this browser until you sign out."),
  h("div", { class: "field" }, h("label", { for: "token" }, "Token"), input),
  h("button", { type: "submit", class: "primary" }, "Sign in"),
  message ? h("p", { class: "error", role: "alert" }, message) : null);
  fill(document.getElementById("nav"));
  fill(document.getElementById("who"));
  fill(document.getElementById("view"), form);
  input.focus();
}

function header() {
  const me = session.me;
  const nav = document.getElementById("nav");
  fill(nav, Object.entries(ROUTES).filter(([, [, label]]) => label).map(([route, [, label]]) =>
    h("a", { href: `#/${route}`, dataset: { route } }, label)));
  const who = document.getElementById("who");
  const workspaces = me.workspaces || [];
  const picker = workspaces.length > 1
    ? h("select", { id: "workspace", "aria-label": "Workspace", onchange: (e) => { saveWorkspace(e.target.value); route(); } },
      workspaces.map((w) => h("option", { value: w, selected: w === session.workspace }, w)))
    : h("span", { class: "workspace" }, session.workspace);
  fill(who, h("span", {}, `${me.member || "?"} (${me.role})`), " · ", picker, " ",
    h("button", { class: "link", onclick: () => { saveToken(""); signInForm(); } }, "Sign out"));
}

async function route() {
  if (leaveView) { try { leaveView(); } catch (err) { /* the old view is gone either way */ } leaveView = null; }
  clearNotice();
  const parts = location.hash.replace(/^#\/?/, "").split("/").filter(Boolean).map(decodeURIComponent);
  const name = ROUTES[parts[0]] ? parts[0] : HOME;
  for (const a of document.querySelectorAll("#nav a")) a.classList.toggle("active", a.dataset.route === name);
  const root = document.getElementById("view");
  fill(root, h("p", {}, "Loading…"));
  try {
    const module = await import(ROUTES[name][0]);
    const cleanup = await module.render(root, parts.slice(1));
    if (typeof cleanup === "function") leaveView = cleanup;
  } catch (err) {
    if (err instanceof ApiProblem && err.status === 401) { signInForm(err.userMessage); return; }
    fill(root, h("p", { class: "error", role: "alert" }, err.userMessage || `This view failed: ${err.message}`));
  }
}

async function start() {
  if (!session.token) { signInForm(); return; }
  try {
    session.me = await get("/v1/me");
  } catch (err) {
    signInForm(err.userMessage || String(err));
    return;
  }
  const choices = session.me.workspaces || [];
  if (session.me.workspace) saveWorkspace(session.me.workspace);
  else if (!choices.includes(session.workspace) && choices.length) saveWorkspace(choices[0]);
  header();
  await route();
}

window.addEventListener("hashchange", () => { if (session.me) route(); });
window.addEventListener("unhandledrejection", (event) => notify(event.reason?.userMessage || String(event.reason), "error"));
start();
