// The dashboard's shell: log-in, log-out, hash routing (#/jobs, #/jobs/<id>, …)
// and the 2-second refresh of the page shown.

import { call, clearToken, setToken, token } from "./api.js";
import { fill, h } from "./dom.js";
import * as pages from "./pages.js";

const REFRESH_MS = 2000;

const routes = [
  [/^\/jobs\/([^/]+)$/, "jobs", pages.job],
  [/^\/jobs$/, "jobs", pages.jobs],
  [/^\/quarantined$/, "quarantined", pages.quarantined],
  [/^\/workers$/, "workers", pages.workers],
  [/^\/schedules$/, "schedules", pages.schedules],
  [/^\/blueprints$/, "blueprints", pages.blueprints],
  [/^\/status$/, "status", pages.status],
];

const $ = (id) => document.getElementById(id);

// Each navigation starts a new generation; a refresh of an older one stops.
let generation = 0;
let timer = null;

function showLogin(message) {
  generation++;
  clearTimeout(timer);
  $("top").hidden = true;
  $("main").hidden = true;
  $("login").hidden = false;
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message ?? "";
  $("token").focus();
}

async function route() {
  if (!token()) {
    showLogin();
    return;
  }
  $("login").hidden = true;
  $("top").hidden = false;
  const main = $("main");
  main.hidden = false;

  const hash = decodeURIComponent(location.hash.replace(/^#/, "")) || "/jobs";
  const found = routes.map(([re, nav, page]) => [hash.match(re), nav, page]).find(([m]) => m);
  const mine = ++generation;
  clearTimeout(timer);
  if (!found) {
    fill(main, h("p", { class: "error" }, `There is no page ${hash}.`));
    return;
  }
  const [match, nav, page] = found;
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", link.dataset.page === nav);
  }
  fill(main);
  const refresh = await page(main, ...match.slice(1));
  // A page that returns a function wants it called again and again.
  const again = async () => {
    if (mine !== generation) return;
    try {
      await refresh();
    } catch (e) {
      console.warn("refresh failed", e);
    }
    if (mine === generation) timer = setTimeout(again, REFRESH_MS);
  };
  if (typeof refresh === "function" && mine === generation) timer = setTimeout(again, REFRESH_MS);
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const candidate = $("token").value.trim();
  const button = $("login-button");
  button.disabled = true;
  try {
    // Any client route tells whether the token is known.
    await call("/api/v1/dashboard", { withToken: candidate });
    setToken(candidate);
    $("token").value = "";
    $("login-error").hidden = true;
    // A new hash routes through `hashchange`; the same one is routed here.
    if (!location.hash || location.hash === "#/") location.hash = "#/jobs";
    else await route();
  } catch (e) {
    showLogin(e.message);
  } finally {
    button.disabled = false;
  }
});

$("logout").addEventListener("click", () => {
  clearToken();
  showLogin();
});

window.addEventListener("avtomatika:unauthorized", (event) => {
  clearToken();
  showLogin(event.detail);
});

window.addEventListener("hashchange", route);
route();
