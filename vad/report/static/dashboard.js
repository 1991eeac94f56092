/* vad monitor dashboard: polls /api/cameras every second (tiles, frames, sparklines) and follows
 * /api/events/stream (Server-Sent Events) for the event feed. Vanilla JS, no build step.
 * Every value from the server is set with textContent / attributes, never as HTML. */
"use strict";

(function () {
  const POLL_MS = 1000;
  const MAX_EVENTS = 200;
  const camerasEl = document.getElementById("cameras");
  const eventsEl = document.getElementById("events");
  const cameraTemplate = document.getElementById("camera-template");
  const eventTemplate = document.getElementById("event-template");
  const tiles = new Map();   // camera name -> {el, frameUrl, loading, plotted}
  const events = new Map();  // event_id -> {el, record}
  let lastId = 0;
  let threshold = null;

  function setStatus(id, status, text) {
    const el = document.getElementById(id);
    el.dataset.status = status;
    if (text) el.title = text;
  }

  function fmt(v, digits) {
    return v === null || v === undefined || Number.isNaN(v) ? "–" : Number(v).toFixed(digits);
  }

  function timeText(wall) {
    if (!wall) return "";
    const d = new Date(wall * 1000);
    const today = new Date().toDateString() === d.toDateString();
    return (today ? "" : d.toLocaleDateString() + " ") + d.toLocaleTimeString([], {hour12: false});
  }

  function fileUrl(kind, rel) {
    // the run keeps "<kind>/<file>": only the file name travels, encoded
    const name = String(rel).split("/").pop();
    return "/files/" + kind + "/" + encodeURIComponent(name);
  }

  function clock() {
    document.getElementById("clock").textContent = new Date().toLocaleTimeString([], {hour12: false});
  }

  // ---- cameras --------------------------------------------------------------------------------
  function tileFor(name) {
    let t = tiles.get(name);
    if (t) return t;
    const el = cameraTemplate.content.firstElementChild.cloneNode(true);
    el.dataset.camera = name;
    el.querySelector(".camera-name").textContent = name;
    el.querySelector(".camera-name").title = name;
    camerasEl.appendChild(el);
    t = {el: el, frameUrl: null, loading: false, plotted: false};
    tiles.set(name, t);
    document.getElementById("cameras-empty").hidden = true;
    return t;
  }

  function refreshFrame(name, t) {
    if (t.loading) return;  // the previous frame is still on its way
    t.loading = true;
    fetch("/api/cameras/" + encodeURIComponent(name) + "/frame.jpg", {cache: "no-store"})
      .then(function (r) { return r.ok ? r.blob() : null; })
      .then(function (blob) {
        if (!blob) return;
        const url = URL.createObjectURL(blob);
        const img = t.el.querySelector(".camera-frame");
        img.onload = function () { if (t.frameUrl && t.frameUrl !== url) URL.revokeObjectURL(t.frameUrl); t.frameUrl = url; };
        img.src = url;
        t.el.querySelector(".frame-box").classList.add("has-frame");
      })
      .catch(function () {})
      .finally(function () { t.loading = false; });
  }

  function drawSparkline(t, scores) {
    if (typeof Plotly === "undefined" || !scores.length) return;
    const box = t.el.querySelector(".sparkline");
    const x = scores.map(function (p) { return new Date(p[0] * 1000); });
    const y = scores.map(function (p) { return p[1]; });
    let top = Math.max.apply(null, y.concat([threshold || 0]));
    top = top > 0 ? top * 1.1 : 1;
    const shapes = threshold === null ? [] : [{
      type: "line", xref: "paper", x0: 0, x1: 1, y0: threshold, y1: threshold,
      line: {color: "#ff5d5d", width: 1, dash: "dot"},
    }];
    Plotly.react(box, [{
      x: x, y: y, type: "scatter", mode: "lines", hoverinfo: "skip",
      line: {color: "#4cc2ff", width: 1.5}, fill: "tozeroy", fillcolor: "rgba(76,194,255,0.12)",
    }], {
      height: 72, margin: {l: 30, r: 6, t: 6, b: 18}, showlegend: false,
      paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "rgba(0,0,0,0)", shapes: shapes,
      font: {family: "system-ui, sans-serif", size: 9, color: "#8390a2"},
      xaxis: {type: "date", showgrid: false, tickformat: "%H:%M:%S", nticks: 4, zeroline: false, fixedrange: true},
      yaxis: {range: [0, top], nticks: 3, gridcolor: "#243041", zeroline: false, fixedrange: true},
    }, {staticPlot: true, displayModeBar: false, responsive: true});
    t.plotted = true;
  }

  function renderCamera(c) {
    const t = tileFor(c.name);
    const el = t.el;
    if (el.dataset.state !== c.state) {
      el.dataset.state = c.state;
      const badge = el.querySelector(".state-badge");
      badge.textContent = c.state;
      badge.dataset.state = c.state;
    }
    el.querySelector(".fps-in").textContent = fmt(c.fps_in, 1);
    el.querySelector(".fps-scored").textContent = fmt(c.fps_scored, 1);
    el.querySelector(".last-score").textContent = fmt(c.last_score, 2);
    el.querySelector(".events-count").textContent = String(c.events);
    el.querySelector(".dropped").textContent = String(c.dropped);
    el.querySelector(".reconnects").textContent = String(c.reconnects);
    const err = el.querySelector(".camera-error");
    const showErr = c.last_error && c.state !== "live" && c.state !== "learning";
    err.hidden = !showErr;
    err.textContent = showErr ? c.last_error : "";
    const age = el.querySelector(".frame-age");
    const stale = c.last_frame_age_s !== null && c.last_frame_age_s > 3;
    age.hidden = !stale;
    age.textContent = stale ? "no signal for " + Math.round(c.last_frame_age_s) + " s" : "";
    if (c.has_frame && c.state !== "stopped") refreshFrame(c.name, t);
    drawSparkline(t, c.scores || []);
  }

  function pollCameras() {
    fetch("/api/cameras", {cache: "no-store"})
      .then(function (r) {
        if (r.status === 401) { document.getElementById("auth-banner").hidden = false; throw new Error("401"); }
        if (!r.ok) throw new Error(String(r.status));
        return r.json();
      })
      .then(function (data) {
        threshold = data.threshold === undefined ? null : data.threshold;
        data.cameras.forEach(renderCamera);
        const live = data.cameras.filter(function (c) { return c.state === "live"; }).length;
        document.querySelector("#summary-cameras b").textContent = live + " / " + data.cameras.length + " live";
        setStatus("api-status", "live", "camera status: up to date");
      })
      .catch(function (e) { setStatus("api-status", "down", "camera status: " + e.message); })
      .finally(function () { setTimeout(pollCameras, POLL_MS); });
  }

  // ---- events ---------------------------------------------------------------------------------
  function renderEvent(rec, fresh) {
    const id = String(rec.event_id);
    let entry = events.get(id);
    if (entry && entry.record.update === "end" && rec.update !== "end") return;  // an end is final
    if (!entry) {
      const el = eventTemplate.content.firstElementChild.cloneNode(true);
      el.dataset.eventId = id;
      entry = {el: el, record: rec};
      events.set(id, entry);
      if (fresh) el.classList.add("fresh");
    }
    entry.record = rec;
    const el = entry.el;
    const status = rec.update === "end" ? "ended" : "open";
    el.dataset.status = status;
    el.dataset.camera = rec.video_id;
    el.dataset.start = String(rec.start_wall || 0);
    el.querySelector(".event-camera").textContent = rec.video_id;
    el.querySelector(".event-status").textContent = status;
    el.querySelector(".event-time").textContent = timeText(rec.start_wall);
    el.querySelector(".event-time").title = "start";
    const dur = rec.end_s - rec.start_s;
    el.querySelector(".event-duration").textContent = Number.isFinite(dur) ? dur.toFixed(1) + " s" : "";
    el.querySelector(".event-peak").textContent = "peak " + fmt(rec.peak_score, 2);
    if (rec.snapshot) {
      const url = fileUrl("snapshots", rec.snapshot);
      const img = el.querySelector(".event-snapshot");
      const src = url + "?v=" + rec.peak_frame;  // rewritten while the peak rises
      if (img.getAttribute("src") !== src) img.setAttribute("src", src);
      el.querySelector(".snapshot-link").setAttribute("href", url);
    }
    const clip = el.querySelector(".event-clip");
    if (status === "ended" && rec.clip) {
      clip.setAttribute("href", fileUrl("clips", rec.clip));
      clip.hidden = false;
    }
    const ex = el.querySelector(".event-explanation");
    ex.hidden = !rec.explanation;
    ex.textContent = rec.explanation || "";
    const exErr = el.querySelector(".event-explanation-error");
    exErr.hidden = !rec.explanation_error;
    exErr.textContent = rec.explanation_error ? "no explanation: " + rec.explanation_error : "";
    place(el);
  }

  function place(el) {
    // newest first by start time; a new event goes above the older ones
    const start = Number(el.dataset.start);
    let before = null;
    for (const other of eventsEl.children) {
      if (other !== el && Number(other.dataset.start) < start) { before = other; break; }
    }
    if (el.parentNode !== eventsEl || el.nextElementSibling !== before) eventsEl.insertBefore(el, before);
    while (eventsEl.children.length > MAX_EVENTS) {
      const last = eventsEl.lastElementChild;
      events.delete(last.dataset.eventId);
      last.remove();
    }
    document.getElementById("events-empty").hidden = eventsEl.children.length > 0;
    document.querySelector("#summary-events b").textContent = String(eventsEl.children.length);
  }

  function openStream() {
    const es = new EventSource("/api/events/stream?after=" + lastId);
    es.onopen = function () { setStatus("stream-status", "live", "event stream: connected"); };
    es.onerror = function () { setStatus("stream-status", "down", "event stream: reconnecting"); };
    es.addEventListener("event", function (e) {
      lastId = Number(e.lastEventId) || lastId;
      renderEvent(JSON.parse(e.data), true);
    });
  }

  function loadEvents() {
    fetch("/api/events", {cache: "no-store"})
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.json(); })
      .then(function (data) {
        data.events.forEach(function (e) { renderEvent(e.record, false); });
        lastId = data.last_id;
        openStream();
      })
      .catch(function () { setStatus("stream-status", "down", "events: unavailable"); setTimeout(loadEvents, 3000); });
  }

  clock();
  setInterval(clock, 1000);
  pollCameras();
  loadEvents();
})();
