// The page of `heart-run serve`: submits songs, follows their events, plays
// the WAV as it streams in. The song's state is mirrored on <body
// data-song="..."> (idle, queued, running, done, failed, cancelled).
"use strict";

const $ = (id) => document.getElementById(id);
const SETTINGS = ["cfg_scale", "temperature", "topk", "flow_steps", "codec_guidance"];
const MAX_SEED = Number.MAX_SAFE_INTEGER;

let presets = {};
let preset = "quality";
let current = null; // { id, events: EventSource, playing: bool }

function text(el, value) { el.textContent = value; }

function setState(state, message) {
  document.body.dataset.song = state;
  const badge = $("state");
  badge.className = "badge " + state;
  text(badge, state);
  if (message !== undefined) text($("status"), message);
  $("cancel").disabled = !(state === "queued" || state === "running");
}

function setProgress(fraction, detail) {
  const pct = Math.max(0, Math.min(100, Math.round(fraction * 100)));
  $("progress-fill").style.width = pct + "%";
  $("progress").setAttribute("aria-valuenow", String(pct));
  text($("progress-detail"), detail);
}

function fmt(x, digits) { return Number(x).toFixed(digits); }

function settingsText(s) {
  return `${fmt(s.duration, 0)} s · cfg ${s.cfg_scale} · T ${s.temperature} · top-k ${s.topk} · ` +
    `${s.flow_steps} steps · cg ${s.codec_guidance}` + (s.speculate ? ` · spec ${s.speculate}` : "");
}

async function json(url, options) {
  const response = await fetch(url, options);
  let body = null;
  try { body = await response.json(); } catch (_) { body = null; }
  if (!response.ok) {
    const message = body && body.error ? body.error : `${response.status} ${response.statusText}`;
    throw new Error(message);
  }
  return body;
}

async function loadEngine() {
  const health = await json("/v1/health");
  const e = health.engine;
  $("engine").innerHTML = "";
  const parts = [["engine", e.name], ["LM", e.precision], ["codec", e.codec_precision || "–"],
    ["backend", e.backend], ["queue", `${health.queue.queued}/${health.queue.max_queued}`]];
  parts.forEach(([k, v], i) => {
    if (i) $("engine").append(" · ");
    $("engine").append(k + " ");
    const b = document.createElement("b");
    b.textContent = v;
    $("engine").append(b);
  });
  $("duration").max = String(Math.floor(e.max_duration_s));
  if (Number($("duration").value) > e.max_duration_s) $("duration").value = String(Math.floor(e.max_duration_s));
}

async function loadPresets() {
  presets = await json("/v1/presets");
  const box = $("presets");
  box.innerHTML = "";
  Object.keys(presets).forEach((name) => {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "radio");
    b.dataset.preset = name;
    b.innerHTML = `${name[0].toUpperCase()}${name.slice(1)}<small>${presets[name].flow_steps} steps</small>`;
    b.addEventListener("click", () => choosePreset(name));
    box.append(b);
  });
  choosePreset(presets[preset] ? preset : Object.keys(presets)[0]);
}

function choosePreset(name) {
  preset = name;
  document.querySelectorAll("#presets button").forEach((b) => {
    b.setAttribute("aria-checked", String(b.dataset.preset === name));
  });
  SETTINGS.forEach((k) => { $(k).value = presets[name][k]; });
}

function body() {
  const b = { tags: $("tags").value, lyrics: $("lyrics").value, preset, duration: Number($("duration").value) };
  const seed = $("seed").value.trim();
  if (seed !== "") b.seed = Number(seed);
  // Only the settings changed from the preset are sent, so the preset stays meaningful.
  SETTINGS.forEach((k) => {
    const v = Number($(k).value);
    if ($(k).value !== "" && v !== Number(presets[preset][k])) b[k] = v;
  });
  return b;
}

async function submit(event) {
  event.preventDefault();
  const error = $("form-error");
  error.hidden = true;
  $("submit").disabled = true;
  try {
    const created = await json("/v1/songs", {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body()),
    });
    follow(created.id, created.position, created.seed);
    loadSongs();
  } catch (e) {
    text(error, e.message);
    error.hidden = false;
  } finally {
    $("submit").disabled = false;
  }
}

function startPlayer(id) {
  if (!current || current.id !== id || current.playing) return;
  current.playing = true;
  const player = $("player");
  player.src = `/v1/songs/${id}/audio`;
  player.play().catch(() => { /* autoplay refused: the controls remain */ });
}

function follow(id, position, seed) {
  if (current && current.events) current.events.close();
  current = { id, events: null, playing: false };
  $("now-empty").hidden = true;
  $("now-body").hidden = false;
  $("stats").hidden = true;
  $("download").hidden = true;
  $("player").removeAttribute("src");
  $("player").load();
  text($("now-meta"), `song ${id} · seed ${seed}`);
  setState("queued", `Waiting in the queue (position ${position})`);
  setProgress(0, "");

  const es = new EventSource(`/v1/songs/${id}/events`);
  current.events = es;
  const on = (name, handler) => es.addEventListener(name, (m) => {
    if (current && current.id === id) handler(JSON.parse(m.data));
  });
  on("queued", (e) => setState("queued", `Waiting in the queue (position ${e.position})`));
  on("started", () => setState("running", "Writing the music (language model)…"));
  on("frames", (e) => {
    setProgress(0.85 * e.frames / e.max_frames, `${e.frames} / ${e.max_frames} frames`);
  });
  on("windows", (e) => {
    const total = e.total ? `${e.done} / ${e.total}` : `${e.done}`;
    if (e.total) {
      setState("running", "Decoding the audio (codec)…");
      setProgress(0.85 + 0.15 * e.done / e.total, `codec window ${total}`);
    } else {
      text($("progress-detail"), `${$("progress-detail").textContent} · codec window ${total}`);
    }
    if (e.audio_seconds > 0) startPlayer(id);
  });
  on("done", (e) => {
    es.close();
    current.done = true;
    setState("done", `Done: ${fmt(e.audio_seconds, 1)} s of audio`);
    setProgress(1, `${e.frames} frames · stopped at ${e.stop.replace(/_/g, " ")}`);
    startPlayer(id);
    const dl = $("download");
    dl.href = `/v1/songs/${id}/audio`;
    dl.setAttribute("download", `heart-${id}.wav`);
    dl.hidden = false;
    const stats = $("stats");
    stats.innerHTML = "";
    [["first audio", `${fmt(e.ttfa_s, 2)} s`], ["total", `${fmt(e.total_s, 2)} s`],
      ["LM", `${fmt(e.lm_frames_per_s, 1)} fr/s`], ["real-time", `${fmt(e.real_time_factor, 2)}×`]]
      .forEach(([k, v]) => {
        const d = document.createElement("div");
        const dt = document.createElement("dt"); dt.textContent = k;
        const dd = document.createElement("dd"); dd.textContent = v;
        d.append(dt, dd);
        stats.append(d);
      });
    stats.hidden = false;
    loadSongs();
  });
  on("failed", (e) => { es.close(); setState("failed", e.error); loadSongs(); });
  on("cancelled", () => { es.close(); setState("cancelled", "Cancelled"); setProgress(0, ""); loadSongs(); });
}

async function cancel() {
  if (!current) return;
  try {
    await json(`/v1/songs/${current.id}`, { method: "DELETE" });
  } catch (e) {
    text($("status"), e.message);
  }
}

function when(unix) {
  return new Date(unix * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

// Requests of the list may answer out of order (one at submit, one when the
// song ends): only the newest request's answer is drawn.
let songsRequest = 0;

async function loadSongs() {
  const request = ++songsRequest;
  let list;
  try { list = await json("/v1/songs"); } catch (_) { return; }
  if (request !== songsRequest) return;
  const rows = $("songs");
  rows.innerHTML = "";
  if (!list.songs.length) {
    rows.innerHTML = '<tr class="none"><td colspan="6">No songs yet.</td></tr>';
    return;
  }
  list.songs.forEach((s) => {
    const tr = document.createElement("tr");
    tr.dataset.id = s.id;
    const cells = [when(s.created_unix), s.tags || "–", (s.preset ? s.preset + " · " : "") + settingsText(s.settings),
      String(s.seed), s.state];
    cells.forEach((c, i) => {
      const td = document.createElement("td");
      td.textContent = c;
      if (i === 2) td.className = "settings";
      if (i === 3) td.className = "seed";
      tr.append(td);
    });
    const links = document.createElement("td");
    if (s.state === "done") {
      const play = document.createElement("a");
      play.href = "#";
      play.textContent = "Play";
      play.addEventListener("click", (ev) => {
        ev.preventDefault();
        $("player").src = s.audio_url;
        $("player").play().catch(() => {});
      });
      const dl = document.createElement("a");
      dl.href = s.audio_url;
      dl.setAttribute("download", `heart-${s.id}.wav`);
      dl.textContent = "Download";
      links.append(play, dl);
    }
    const reuse = document.createElement("a");
    reuse.href = "#";
    reuse.textContent = "Reuse";
    reuse.title = "Fill the form with this song's text, settings and seed";
    reuse.addEventListener("click", (ev) => {
      ev.preventDefault();
      $("tags").value = s.tags;
      $("lyrics").value = s.lyrics;
      $("duration").value = String(s.settings.duration);
      $("seed").value = String(s.seed);
      if (s.preset && presets[s.preset]) choosePreset(s.preset);
      SETTINGS.forEach((k) => { $(k).value = s.settings[k]; });
    });
    links.append(reuse);
    tr.append(links);
    rows.append(tr);
  });
}

// A streamed WAV has no length in its header, so the player cannot seek it;
// once it has played to the end of a finished song, load the complete file.
$("player").addEventListener("ended", () => {
  if (current && current.done && current.playing) {
    current.playing = false;
    $("player").src = `/v1/songs/${current.id}/audio`;
  }
});

$("song-form").addEventListener("submit", submit);
$("cancel").addEventListener("click", cancel);
$("dice").addEventListener("click", () => { $("seed").value = String(Math.floor(Math.random() * 2 ** 32)); });
$("seed").max = String(MAX_SEED);

(async () => {
  try {
    await loadEngine();
    await loadPresets();
    await loadSongs();
    document.body.dataset.ready = "true";
  } catch (e) {
    text($("engine"), "service unreachable: " + e.message);
  }
})();
