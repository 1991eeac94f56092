// vad run report: tables (sort, filter, pages) and Plotly charts from the page's embedded JSON.
// Every value from the run is put in the page as text (textContent), never as HTML.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("vad-data").textContent);
  const PAGE = 100;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") e.className = v;
      else if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }
  const fmt = (x, d = 3) => (x === null || x === undefined) ? "" : (typeof x === "number" ? (Number.isInteger(x) && d === 3 ? String(x) : x.toFixed(d)) : String(x));

  function kv(table, pairs) {
    if (!table) return;
    for (const [k, v] of pairs) {
      if (v === null || v === undefined || v === "") continue;
      table.append(el("tr", {}, el("th", {text: k}), el("td", {text: typeof v === "object" ? JSON.stringify(v) : fmt(v, 4)})));
    }
  }

  // A table over rows: click a header to sort, type to filter, pages of PAGE rows.
  function table(id, columns, rows, opts) {
    const t = document.getElementById(id);
    if (!t) return;
    const filter = opts.filter ? document.getElementById(opts.filter) : null;
    const status = opts.status ? document.getElementById(opts.status) : null;
    const count = document.getElementById(opts.count);
    const pager = document.getElementById(opts.pager);
    let sortKey = opts.sort || null, sortDir = opts.sortDir || -1, page = 0;
    const head = el("tr");
    for (const c of columns) {
      const th = el("th", {text: c.label, "data-key": c.key, class: c.sortable === false ? "" : "sort"});
      if (c.sortable !== false) th.addEventListener("click", () => {
        sortDir = sortKey === c.key ? -sortDir : (c.num ? -1 : 1); sortKey = c.key; page = 0; draw();
      });
      head.append(th);
    }
    t.tHead.append(head);
    function visible() {
      const q = filter ? filter.value.trim().toLowerCase() : "";
      const st = status ? status.value : "";
      let out = rows.filter(r => (!st || r.status === st) && (!q || opts.text(r).toLowerCase().includes(q)));
      if (sortKey) {
        out = out.slice().sort((a, b) => {
          const x = a[sortKey], y = b[sortKey];
          if (x === y) return 0;
          if (x === null || x === undefined) return 1;
          if (y === null || y === undefined) return -1;
          return (x < y ? -1 : 1) * sortDir;
        });
      }
      return out;
    }
    function draw() {
      const rs = visible();
      const pages = Math.max(1, Math.ceil(rs.length / PAGE));
      page = Math.min(page, pages - 1);
      const body = el("tbody");
      for (const r of rs.slice(page * PAGE, (page + 1) * PAGE)) {
        const tr = el("tr", {"data-id": r.id, class: r.status ? "status-" + r.status : null});
        for (const c of columns) tr.append(el("td", {class: c.cls || null}, c.render ? c.render(r) : fmt(r[c.key], c.digits)));
        body.append(tr);
      }
      t.tBodies[0].replaceWith(body);
      for (const th of head.children) th.classList.toggle("sorted", th.dataset.key === sortKey);
      count.textContent = `${rs.length} of ${rows.length}`;
      count.dataset.shown = rs.length;
      pager.replaceChildren();
      if (pages > 1) {
        const prev = el("button", {text: "‹ previous", disabled: page === 0});
        const next = el("button", {text: "next ›", disabled: page >= pages - 1});
        prev.onclick = () => { page--; draw(); };
        next.onclick = () => { page++; draw(); };
        pager.append(prev, el("span", {text: ` page ${page + 1} of ${pages} `}), next);
      }
    }
    if (filter) filter.addEventListener("input", () => { page = 0; draw(); });
    if (status) status.addEventListener("change", () => { page = 0; draw(); });
    draw();
  }

  function thumbCell(e) {
    if (e.thumb) return el("img", {src: e.thumb, class: "thumb", loading: "lazy", alt: "peak frame of " + e.id});
    return el("span", {class: "muted", text: e.thumb_why ? "no thumbnail" : "", title: e.thumb_why || null});
  }
  function explanationCell(e) {
    const box = el("div", {class: "explain"});
    if (e.explanation) box.append(el("div", {class: "explanation", text: e.explanation}));
    if (e.explanation_error) box.append(el("div", {class: "explanation-error", text: "no explanation: " + e.explanation_error}));
    if (e.evidence) {
      const d = el("details", {class: "evidence"}, el("summary", {text: "evidence"}));
      const broken = e.evidence.rules_broken || e.evidence.violations;
      if (Array.isArray(broken) && broken.length) {
        const ul = el("ul");
        for (const b of broken) ul.append(el("li", {text: typeof b === "string" ? b : (b.rule || b.text || JSON.stringify(b))}));
        d.append(ul);
      }
      d.append(el("pre", {text: JSON.stringify(e.evidence, null, 1)}));
      box.append(d);
    }
    return box;
  }
  function linksCell(e) {
    const box = el("span");
    if (e.clip) box.append(el("a", {href: e.clip.href, text: e.clip.label, target: "_blank"}));
    if (e.snapshot) box.append(" ", el("a", {href: e.snapshot, text: "snapshot", target: "_blank"}));
    return box;
  }
  const eventColumns = [
    {key: "thumb", label: "", sortable: false, render: thumbCell},
    {key: "video_id", label: "video", render: r => r.video_href ? el("a", {href: r.video_href, text: r.video_id}) : r.video_id},
    {key: "start_s", label: "start (s)", num: true, digits: 2}, {key: "duration_s", label: "length (s)", num: true, digits: 2},
    {key: "peak_score", label: "peak", num: true}, {key: "mean_score", label: "mean", num: true},
    {key: "explanation", label: "explanation", render: explanationCell, cls: "wide"},
    {key: "clip", label: "", sortable: false, render: linksCell},
  ];
  const eventText = r => [r.video_id, r.id, r.explanation || "", r.explanation_error || ""].join(" ");

  // -- charts -----------------------------------------------------------------------------
  // A large run's index fetches Plotly.js after the page has loaded: its tables are usable at
  // once and the charts follow (compiling the 4.8 MB bundle is most of a cold load).
  const pending = [];
  function withPlotly(fn) {
    if (window.Plotly) { fn(); return; }
    pending.push(fn);
    if (pending.length > 1 || !data.plotly_src) return;
    const start = () => {
      const tag = document.createElement("script");
      tag.src = data.plotly_src;
      tag.onload = () => { document.body.dataset.charts = "ready"; pending.splice(0).forEach(f => f()); };
      tag.onerror = () => { document.body.dataset.charts = "failed"; };
      document.head.append(tag);
    };
    if (document.readyState === "complete") start(); else window.addEventListener("load", start);
  }
  const BASE = {margin: {l: 50, r: 20, t: 10, b: 40}, paper_bgcolor: "rgba(0,0,0,0)", plot_bgcolor: "#fff",
                font: {family: "system-ui, sans-serif", size: 12}, legend: {orientation: "h", y: 1.12}};
  const CONFIG = {responsive: true, displaylogo: false};
  function rect(x0, x1, color, name, first, band) {
    return {type: "rect", xref: "x", yref: "paper", x0, x1, y0: band ? band[0] : 0, y1: band ? band[1] : 1,
            fillcolor: color, line: {width: 0}, layer: "below", name, showlegend: first, legendgroup: name};
  }
  function scoreChart(node, c) {
    const shapes = [];
    if (c.reference) shapes.push(rect(c.reference[0], c.reference[1], "rgba(110,110,110,0.18)", "reference part", true));
    c.gt.forEach((g, i) => shapes.push(rect(g[0], g[1], "rgba(255,150,0,0.30)", "ground truth", i === 0, [0, 0.5])));
    // with ground truth, events take the upper half and the truth the lower, so both stay visible
    c.events.forEach((e, i) => shapes.push(rect(e[0], e[1], "rgba(220,30,40,0.22)", "event", i === 0, c.gt.length ? [0.5, 1] : null)));
    if (c.threshold !== null && c.threshold !== undefined)
      shapes.push({type: "line", xref: "paper", x0: 0, x1: 1, y0: c.threshold, y1: c.threshold, name: "threshold",
                   showlegend: true, line: {color: "#c00", dash: "dash", width: 1}});
    const x = c.fps ? c.frame.map(f => f / c.fps) : c.frame;
    const trace = {x, y: c.y, customdata: c.frame, type: "scatter", mode: "lines", name: "score",
                   line: {color: "#1f5fa8", width: 1.3}, hovertemplate: `%{x:.2f} ${c.unit} · frame %{customdata}<br>score %{y:.4f}<extra></extra>`};
    const layout = Object.assign({}, BASE, {height: 300, shapes,
      xaxis: {title: {text: c.unit === "s" ? "time (s)" : "frame"}, rangeslider: {visible: true, thickness: 0.08}},
      yaxis: {title: {text: "score"}, fixedrange: false}});
    withPlotly(() => Plotly.newPlot(node, [trace], layout, CONFIG));
    if (c.thinned) node.after(el("div", {class: "muted small", text: `${c.n} frames shown as ${c.frame.length} points (each bucket's min and max)`}));
  }
  function lazyCharts(charts) {
    const nodes = document.querySelectorAll("[data-chart]");
    const draw = n => { if (!n.dataset.drawn) { n.dataset.drawn = "1"; scoreChart(n, charts[+n.dataset.chart]); } };
    // a few charts are drawn at once (a printed or captured page has them all); many, as they scroll in
    if (nodes.length <= 8 || !("IntersectionObserver" in window)) { nodes.forEach(draw); return; }
    const io = new IntersectionObserver(es => es.forEach(e => { if (e.isIntersecting) { draw(e.target); io.unobserve(e.target); } }),
                                        {rootMargin: "400px"});
    nodes.forEach(n => io.observe(n));
  }
  function videoEvents(events) {
    document.querySelectorAll(".video-events").forEach(box => {
      const mine = events.filter(e => e.video_id === box.dataset.video);
      if (!mine.length) { box.append(el("p", {class: "muted", text: "no events"})); return; }
      for (const e of mine) {
        box.append(el("div", {class: "event-card", "data-event-id": e.id}, thumbCell(e),
          el("div", {}, el("div", {class: "event-title", text: `${fmt(e.start_s, 2)}–${fmt(e.end_s, 2)} s · peak ${fmt(e.peak_score)}`}),
             explanationCell(e), linksCell(e))));
      }
    });
  }

  // -- pages ------------------------------------------------------------------------------
  if (data.page === "index") {
    const s = data.settings || {};
    kv(document.getElementById("settings"), [["head", s.head], ["reference footage", s.reference], ["extractor", s.extractor],
      ["event threshold", s.threshold], ["minimum event (s)", s.min_duration_s], ["merge gap (s)", s.merge_gap_s],
      ["explanations", s.explain ? "on" : "off"], ["executor", data.summary.executor],
      ["finished", data.summary.finished === undefined || data.summary.finished === null ? "unknown" : String(data.summary.finished)],
      ["video time (s)", data.summary.video_s],
      ["stages (s)", data.summary.stages_s ? Object.entries(data.summary.stages_s).map(([k, v]) => `${k.replace(/_s$/, "")} ${fmt(v, 2)}`).join(" · ") : null]]);
    table("videos-table", [
      {key: "id", label: "video", render: r => r.href ? el("a", {href: r.href, text: r.id}) : r.id},
      {key: "status", label: "status", render: r => el("span", {class: "badge " + r.status, text: r.status})},
      {key: "duration_s", label: "length (s)", num: true, digits: 1}, {key: "n_frames", label: "frames", num: true},
      {key: "n_events", label: "events", num: true}, {key: "max_score", label: "max score", num: true},
      {key: "mean_score", label: "mean score", num: true}, {key: "auc", label: "AUC", num: true},
      {key: "error", label: "error / missing", cls: "wide", render: r => [r.error, ...(r.missing || [])].filter(Boolean).join("; ")},
    ], data.videos, {filter: "videos-filter", status: "videos-status", count: "videos-count", pager: "videos-pager",
                     text: r => [r.id, r.status, r.error || "", r.video || ""].join(" ")});
    table("events-table", eventColumns, data.events, {filter: "events-filter", count: "events-count", pager: "events-pager",
                                                      text: eventText, sort: "peak_score", sortDir: -1});
    const scored = data.videos.filter(v => v.max_score !== null && v.max_score !== undefined);
    const hist = document.getElementById("max-hist");
    const hasT = s.threshold !== null && s.threshold !== undefined;
    if (scored.length > 40) {  // many videos: how the peaks are spread
      const shapes = hasT ? [{type: "line", yref: "paper", y0: 0, y1: 1, x0: s.threshold, x1: s.threshold, line: {color: "#c00", dash: "dash"}}] : [];
      withPlotly(() => Plotly.newPlot(hist, [{x: scored.map(v => v.max_score), type: "histogram", marker: {color: "#1f5fa8"}, name: "videos"}],
        Object.assign({}, BASE, {height: 240, shapes, xaxis: {title: {text: "max score of the video"}}, yaxis: {title: {text: "videos"}}}), CONFIG));
    } else if (scored.length) {  // a few: one bar each, highest first
      const rs = scored.slice().sort((a, b) => b.max_score - a.max_score);
      const shapes = hasT ? [{type: "line", xref: "paper", x0: 0, x1: 1, y0: s.threshold, y1: s.threshold, line: {color: "#c00", dash: "dash"}}] : [];
      withPlotly(() => Plotly.newPlot(hist, [{x: rs.map(v => v.id), y: rs.map(v => v.max_score), type: "bar", width: rs.length < 4 ? 0.3 : undefined, marker: {color: rs.map(v => hasT && v.max_score >= s.threshold ? "#c62828" : "#1f5fa8")}}],
        Object.assign({}, BASE, {height: 240, shapes, xaxis: {type: "category"}, yaxis: {title: {text: "max score"}}}), CONFIG));
    } else hist.append(el("p", {class: "muted", text: "no scores"}));
    const ev = data.evaluation;
    if (ev) {
      const m = ev.metrics, ci = ev.ci || {};
      const withCi = k => m[k] === null || m[k] === undefined ? "n/a" :
        fmt(m[k], 4) + (ci[k] ? ` (${fmt(ci[k].low, 4)}–${fmt(ci[k].high, 4)})` : "");
      kv(document.getElementById("eval-metrics"), [["dataset", m.dataset], ["frame AUC", withCi("auc")],
        ["AP (step, sklearn)", withCi("ap_step")], ["AP (trapezoid)", withCi("ap_trapezoid")],
        ["AUC anomalous videos", withCi("auc_anomalous")], ["false-alarm rate", m.far], ["threshold", m.threshold],
        ["videos", m.n_videos], ["frames", m.n_frames], ["anomalous / normal videos", `${m.n_anomalous_videos} / ${m.n_normal_videos}`],
        ["excluded", ev.excluded.length || null], ["without scores", ev.missing_scores.length || null],
        ["without ground truth", ev.missing_gt.length || null], ["evaluation folder", ev.dir]]);
      if (ev.curves) {
        const diag = {x: [0, 1], y: [0, 1], mode: "lines", line: {dash: "dot", color: "#999"}, name: "chance", hoverinfo: "skip"};
        withPlotly(() => {
          Plotly.newPlot("roc", [{x: ev.curves.roc.fpr, y: ev.curves.roc.tpr, mode: "lines", name: `ROC (AUC ${fmt(m.auc, 4)})`}, diag],
            Object.assign({}, BASE, {height: 320, xaxis: {title: {text: "false positive rate"}}, yaxis: {title: {text: "true positive rate"}}}), CONFIG);
          Plotly.newPlot("pr", [{x: ev.curves.pr.recall, y: ev.curves.pr.precision, mode: "lines", name: `PR (AP ${fmt(m.ap_step, 4)})`}],
            Object.assign({}, BASE, {height: 320, xaxis: {title: {text: "recall"}}, yaxis: {title: {text: "precision"}}}), CONFIG);
        });
      }
      const classes = Object.entries(ev.per_class || {});
      if (classes.length) {
        const t = el("table", {class: "grid"}, el("thead", {}, el("tr", {}, ...["class", "videos", "AUC", "AP"].map(h => el("th", {text: h})))));
        const b = el("tbody");
        for (const [c, r] of classes) b.append(el("tr", {}, el("td", {text: c}), el("td", {text: fmt(r.n_videos)}),
                                                  el("td", {text: fmt(r.auc, 4)}), el("td", {text: fmt(r.ap_step, 4)})));
        t.append(b);
        document.getElementById("per-class").append(el("h3", {text: "per class"}), t);
      }
    }
    if (data.cameras) {
      const sec = el("section", {id: "cameras"}, el("h2", {text: "Cameras (last health report)"}));
      const t = el("table", {class: "grid"});
      t.append(el("thead", {}, el("tr", {}, ...["camera", "state", "frames scored", "dropped", "reconnects", "events", "last error"].map(h => el("th", {text: h})))));
      const b = el("tbody");
      for (const [n, c] of Object.entries(data.cameras)) b.append(el("tr", {}, ...[n, c.state, c.frames_scored, c.dropped, c.reconnects, c.events, c.last_error].map(v => el("td", {text: fmt(v)}))));
      t.append(b); sec.append(t);
      document.getElementById("videos").before(sec);
    }
  }
  if (data.inline && data.inline.length) lazyCharts(data.inline);
  videoEvents(data.events || []);
  document.body.dataset.ready = "1";
  if (window.Plotly) document.body.dataset.charts = "ready";
})();
