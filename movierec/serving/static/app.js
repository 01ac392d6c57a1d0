// movierec page: plain JS against the same-origin API (no external resources).
"use strict";

const state = {
  mode: null,          // "existing" | "new"
  userId: null,        // existing user's id, or this browser's new-user id (feedback only)
  ratings: new Map(),  // new user: movie_id -> {movie, rating}
  positive: 4.0,
};

const $ = (id) => document.getElementById(id);

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role" || key === "for") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) node.append(child);
  return node;
}

// A thumb drawn inline (no emoji: machines without an emoji font would show an empty box).
const THUMB_PATH = "M2 10h4v11H2zM8 10l4-8c1.7 0 2.6 1.2 2.2 2.9L13.5 9H20c1.2 0 2.1 1.1 1.9 2.3l-1.4 8c-.2 1-1 1.7-2 1.7H8z";

function thumbIcon(down) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 24 24");
  svg.setAttribute("aria-hidden", "true");
  svg.setAttribute("class", "icon");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", THUMB_PATH);
  if (down) path.setAttribute("transform", "rotate(180 12 12)");
  svg.append(path);
  return svg;
}

function status(message, isError = false) {
  const node = $("status");
  node.textContent = message;
  node.classList.toggle("error", isError);
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    headers: { "content-type": "application/json", ...(options.headers || {}) },
  });
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok && !(body && body.duplicate)) {
    const detail = body && body.detail ? body.detail : response.statusText;
    throw new Error(`${response.status}: ${detail}`);
  }
  return body;
}

function uuid() {
  if (window.crypto && typeof crypto.randomUUID === "function") return crypto.randomUUID();
  const bytes = crypto.getRandomValues(new Uint8Array(16));  // non-secure origins lack randomUUID
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

function newUserId() {
  // A stable id for this browser's anonymous user, far above MovieLens ids; used for feedback.
  let id = Number(localStorage.getItem("movierec.newUserId"));
  if (!Number.isInteger(id) || id < 1) {
    id = 900000000 + Math.floor(Math.random() * 100000000);
    localStorage.setItem("movierec.newUserId", String(id));
  }
  return id;
}

function describe(movie) {
  const year = movie.year ? ` (${movie.year})` : "";
  const genres = movie.genres && movie.genres.length ? ` · ${movie.genres.join(", ")}` : "";
  return { title: `${movie.title}${year}`, meta: genres.slice(3) };
}

// ------------------------------------------------------------------ model status

async function checkModel() {
  try {
    const ready = await fetch("/readyz").then((r) => r.json());
    if (ready.model_version) {
      state.positive = ready.positive_threshold || 4.0;
      $("model-status").textContent = `model ${ready.model} version ${ready.model_version}`;
      $("model-status").dataset.version = ready.model_version;
    } else {
      $("model-status").textContent = ready.detail || "no model loaded yet";
    }
  } catch (error) {
    $("model-status").textContent = `the API is not reachable (${error.message})`;
  }
}

// ------------------------------------------------------------------ existing users

let userLookup = null;
$("user-id-input").addEventListener("input", () => {
  const query = $("user-id-input").value.replace(/\D/g, "");
  clearTimeout(userLookup);
  userLookup = setTimeout(async () => {
    try {
      const found = await api(`/users?query=${encodeURIComponent(query)}&limit=20`);
      $("user-suggestions").replaceChildren(
        ...found.items.map((u) => el("option", { value: String(u.user_id), label: `user ${u.user_id} (${u.ratings} ratings)` })));
    } catch (_) { /* suggestions are optional */ }
  }, 150);
});

$("existing-user-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const id = Number($("user-id-input").value);
  if (!Number.isInteger(id) || id < 1) {
    status("Enter a user id (a positive whole number).", true);
    return;
  }
  state.mode = "existing";
  state.userId = id;
  state.impressionId = null;  // feedback names only a list shown to this user
  $("new-user-panel").hidden = true;
  await loadRecommendations(() => api(`/users/${id}/recommendations?k=10`), `user ${id}`);
});

// ------------------------------------------------------------------ new users

$("new-user").addEventListener("click", () => {
  state.mode = "new";
  state.userId = newUserId();
  state.impressionId = null;
  state.ratings.clear();
  renderRated();
  $("new-user-panel").hidden = false;
  $("recommendations").replaceChildren();
  $("recs-summary").textContent = "Rate a few movies, then ask for recommendations.";
  $("movie-search").focus();
});

$("search-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const query = $("movie-search").value.trim();
  try {
    const found = await api(`/movies?query=${encodeURIComponent(query)}&limit=10`);
    $("search-results").replaceChildren(...found.items.map(searchResult));
    status(found.items.length ? `${found.total} movies match “${query}”.` : `No movie matches “${query}”.`);
  } catch (error) {
    status(`Search failed: ${error.message}`, true);
  }
});

function stars(movie) {
  const current = state.ratings.get(movie.movie_id);
  const group = el("span", { className: "stars", role: "group", "aria-label": `Rate ${movie.title}` });
  for (let value = 1; value <= 5; value += 1) {
    group.append(el("button", {
      type: "button",
      textContent: value <= (current ? current.rating : 0) ? "★" : "☆",
      "aria-label": `Rate ${movie.title} ${value} star${value > 1 ? "s" : ""}`,
      "aria-pressed": String(Boolean(current && current.rating === value)),
      dataset: { testid: `rate-${movie.movie_id}-${value}` },
      onclick: () => rate(movie, value),
    }));
  }
  return group;
}

function searchResult(movie) {
  const text = describe(movie);
  return el("li", { dataset: { testid: "search-result", movieId: String(movie.movie_id) } },
    el("span", {}, text.title, " ", el("span", { className: "meta" }, text.meta)),
    stars(movie),
    el("button", {
      type: "button", className: "plain", textContent: "Like",
      "aria-label": `Like ${movie.title}`,
      dataset: { testid: `like-${movie.movie_id}` },
      onclick: () => rate(movie, 5),
    }));
}

function rate(movie, value) {
  state.ratings.set(movie.movie_id, { movie, rating: value });
  renderRated();
  for (const item of $("search-results").children) {
    if (item.dataset.movieId === String(movie.movie_id)) item.replaceWith(searchResult(movie));
  }
  status(`Rated ${movie.title} ${value} of 5.`);
  // The rating is feedback too (kept even if the page is closed before asking for recommendations).
  sendFeedback(movie.movie_id, "rating", value).catch((error) => status(`Rating not saved: ${error.message}`, true));
}

function renderRated() {
  const rows = [...state.ratings.values()].map(({ movie, rating }) =>
    el("li", { dataset: { testid: "rated-item", movieId: String(movie.movie_id) } },
      `${describe(movie).title}: ${"★".repeat(rating)}${"☆".repeat(5 - rating)}`,
      el("button", {
        type: "button", className: "plain", textContent: "Remove",
        "aria-label": `Remove the rating of ${movie.title}`,
        onclick: () => { state.ratings.delete(movie.movie_id); renderRated(); },
      })));
  $("rated-list").replaceChildren(...rows);
}

$("get-recs").addEventListener("click", async () => {
  const body = {
    liked_movie_ids: [],
    ratings: [...state.ratings.values()].map(({ movie, rating }) => ({ movie_id: movie.movie_id, rating })),
    k: 10,
  };
  const age = Number($("age-input").value);
  if ($("age-input").value && Number.isInteger(age)) body.age = age;
  if ($("gender-input").value) body.gender = $("gender-input").value;
  if ($("occupation-input").value.trim()) body.occupation = $("occupation-input").value.trim();
  await loadRecommendations(() => api("/recommendations", { method: "POST", body: JSON.stringify(body) }), "you");
});

// ------------------------------------------------------------------ recommendations and feedback

async function loadRecommendations(request, who) {
  status("Loading recommendations…");
  try {
    const result = await request();
    renderRecommendations(result, who);
    status("");
  } catch (error) {
    $("recommendations").replaceChildren();
    $("recs-summary").textContent = "";
    status(`Could not load recommendations: ${error.message}`, true);
  }
}

function renderRecommendations(result, who) {
  state.impressionId = result.impression_id;  // feedback on this list names it
  const source = result.fallback ? "popular movies (nothing personal to go on yet)" : "picked by the model";
  $("recs-summary").textContent = `${result.items.length} movies for ${who}, ${source}; model version ${result.model_version}.`;
  $("recs-summary").dataset.source = result.source;
  $("recommendations").replaceChildren(...result.items.map(recommendation));
}

function recommendation(item) {
  const text = describe(item);
  const up = el("button", {
    type: "button", "aria-label": `Thumbs up for ${item.title}`, "aria-pressed": "false",
    dataset: { testid: `thumb-up-${item.movie_id}` },
  }, thumbIcon(false), " Like");
  const down = el("button", {
    type: "button", "aria-label": `Thumbs down for ${item.title}`, "aria-pressed": "false",
    dataset: { testid: `thumb-down-${item.movie_id}` },
  }, thumbIcon(true), " Dislike");
  const thumb = (button, other, value) => async () => {
    try {
      const stored = await sendFeedback(item.movie_id, "thumb", value);
      button.setAttribute("aria-pressed", "true");
      other.setAttribute("aria-pressed", "false");
      button.dataset.eventId = stored.event_id;
      status(`Thanks: ${value > 0 ? "thumbs up" : "thumbs down"} for ${item.title} saved.`);
    } catch (error) {
      status(`Feedback not saved: ${error.message}`, true);
    }
  };
  up.onclick = thumb(up, down, 1);
  down.onclick = thumb(down, up, -1);
  return el("li", { className: "rec", dataset: { testid: "rec-item", movieId: String(item.movie_id) } },
    el("div", {},
      el("strong", { className: "title" }, text.title), " ",
      el("span", { className: "meta", dataset: { testid: "rec-genres" } }, text.meta),
      el("span", { className: "reason", dataset: { testid: "rec-reason" } }, item.reason)),
    el("div", { className: "thumbs" }, up, down));
}

async function sendFeedback(movieId, type, value) {
  if (!state.userId) throw new Error("pick a user first");
  return api("/feedback", {
    method: "POST",
    body: JSON.stringify({
      event_id: uuid(), user_id: state.userId, movie_id: movieId, type, value,
      timestamp: new Date().toISOString(),
      ...(state.impressionId ? { impression_id: state.impressionId } : {}),
    }),
  });
}

// ------------------------------------------------------------------ monitoring

const SVG = "http://www.w3.org/2000/svg";

function sparkline(values) {
  // One point per monitor run, scaled to the runs' range; missing values break nothing.
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 200 60");
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("aria-hidden", "true");
  const known = values.filter((v) => v !== null && v !== undefined);
  if (!known.length) return svg;
  const low = Math.min(...known), high = Math.max(...known);
  const span = high - low || 1;
  const x = (i) => (values.length === 1 ? 100 : 5 + (190 * i) / (values.length - 1));
  const y = (v) => 55 - (50 * (v - low)) / span;
  const points = values.map((v, i) => (v === null || v === undefined ? null : `${x(i)},${y(v)}`)).filter(Boolean);
  const line = document.createElementNS(SVG, "polyline");
  line.setAttribute("points", points.join(" "));
  svg.append(line);
  const last = points[points.length - 1].split(",");
  const dot = document.createElementNS(SVG, "circle");
  dot.setAttribute("cx", last[0]); dot.setAttribute("cy", last[1]); dot.setAttribute("r", "3");
  svg.append(dot);
  return svg;
}

function formatValue(value) {
  if (value === null || value === undefined) return "–";
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(3);
}

function age(days) {
  if (days === null || days === undefined) return "";
  return days < 1 ? `${Math.round(days * 24)} h old` : `${days.toFixed(1)} days old`;
}

async function loadMonitoring() {
  try {
    const view = await api("/monitoring");
    const champion = view.champion
      ? `Champion version ${view.champion.version}${view.champion.age_days !== null ? `, ${age(view.champion.age_days)}` : ""}.`
      : "No champion served yet.";
    if (!view.runs.length) {
      $("monitoring-summary").textContent = `${champion} No monitor run yet: run \`movierec monitor\`.`;
      return;
    }
    const last = view.last_run;
    const alerts = view.alerts.length ? `${view.alerts.length} alert(s)` : "no alert";
    $("monitoring-summary").textContent =
      `${champion} Last monitor run: ${last.window.until} (version ${last.champion_version}), ${alerts}; ` +
      `${view.runs.length} run(s) charted.`;
    $("monitoring-alerts").replaceChildren(...view.alerts.map((alert) =>
      el("li", { dataset: { testid: "monitoring-alert", metric: alert.metric } }, alert.message)));
    const alerting = new Set(view.alerts.map((alert) => alert.metric));
    $("monitoring-charts").replaceChildren(...view.charts.map(({ metric, label }) => {
      const values = view.runs.map((run) => run.metrics[metric]);
      return el("figure", { className: `chart${alerting.has(metric) ? " alerting" : ""}`, dataset: { testid: "monitoring-chart", metric } },
        el("h3", {}, label), sparkline(values),
        el("span", { className: "value" }, `latest ${formatValue(values[values.length - 1])}`));
    }));
    $("monitoring-report").hidden = !view.report;
  } catch (error) {
    $("monitoring-summary").textContent = `Monitoring not available (${error.message}).`;
  }
}

checkModel();
loadMonitoring();
