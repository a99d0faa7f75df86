// The console's only way to the engine: the public HTTP API with the bearer token the user entered.
// Every failure becomes an ApiProblem whose `userMessage` is a sentence for a person, not raw JSON.

const TOKEN_KEY = "segment-console-token";
const WORKSPACE_KEY = "segment-console-workspace";

export const session = {
  token: localStorage.getItem(TOKEN_KEY) || "",
  workspace: localStorage.getItem(WORKSPACE_KEY) || "",
  me: null, // GET /v1/me: {role, member, workspace, workspaces}
};

export function saveToken(token) {
  session.token = token;
  if (token) localStorage.setItem(TOKEN_KEY, token); else localStorage.removeItem(TOKEN_KEY);
}

export function saveWorkspace(workspace) {
  session.workspace = workspace;
  localStorage.setItem(WORKSPACE_KEY, workspace);
}

const FRIENDLY = {
  unauthenticated: "That token was not accepted. Check it and sign in again.",
  forbidden: "Your role may not do this.",
  not_found: "It no longer exists, or it is not visible to you.",
  not_ready: "The worker is still starting. Try again in a moment.",
  partitions_unavailable: "Part of the data is moving between workers. Try again in a moment.",
  payload_too_large: "That is too much for one request.",
  internal_error: "The engine hit an internal error. The operators can find it in the worker's log.",
};

export class ApiProblem extends Error {
  constructor(status, body) {
    const message = (body && (FRIENDLY[body.code] || body.message)) || `The engine answered ${status}.`;
    super(message);
    this.status = status;
    this.code = body ? body.code : undefined;
    this.body = body || {};
    this.userMessage = message;
    // invalid_rule: one entry per problem: {code, path (JSON pointer such as "/rules/0/rules/2"), field, operator, message}
    this.problems = (body && body.problems) || [];
  }
}

/** Call the API: `path` is absolute (`/v1/...`); returns parsed JSON (null for 204). */
export async function call(method, path, body, { raw = false } = {}) {
  const headers = { Authorization: `Bearer ${session.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    throw new ApiProblem(0, { code: "unreachable", message: "The worker cannot be reached. Is it running?" });
  }
  if (raw && response.ok) return response;
  if (response.status === 204) return null;
  const text = await response.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch (err) { parsed = null; }
  if (!response.ok) throw new ApiProblem(response.status, parsed && parsed.error ? parsed.error : parsed);
  return parsed;
}

/** A path under the current workspace: ws("/segments") -> /v1/workspaces/<workspace>/segments */
export function ws(path) {
  return `/v1/workspaces/${encodeURIComponent(session.workspace)}${path}`;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body === undefined ? {} : body);
export const put = (path, body) => call("PUT", path, body);
export const patch = (path, body) => call("PATCH", path, body);
export const del = (path) => call("DELETE", path);
