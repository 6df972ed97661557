/**
 * The inspector's single page: plain HTML, CSS and JavaScript, nothing fetched from elsewhere (it must work offline
 * and inside a private network). It lists the actors, draws the selected one's statechart from the server's ELK
 * layout as SVG with the current state lit, streams transitions (Server-Sent Events) into a filterable log, and
 * offers the controls that fit the selected actor.
 */
export const INSPECTOR_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Forge Kernel inspector</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  :root { --bg: #0f1419; --panel: #171d24; --line: #2a323c; --text: #d6dde4; --dim: #8593a1; --accent: #4fb3ff; --ok: #3ecf8e; --warn: #f5b942; --bad: #ff6b6b; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 13px/1.4 system-ui, sans-serif; background: var(--bg); color: var(--text); display: grid; grid-template-rows: auto 1fr 38%; grid-template-columns: 330px 1fr; height: 100vh; }
  header { grid-column: 1 / 3; display: flex; gap: 16px; align-items: center; padding: 8px 14px; border-bottom: 1px solid var(--line); background: var(--panel); }
  header h1 { font-size: 15px; margin: 0; }
  #connection { color: var(--dim); }
  #cluster { color: var(--dim); margin-left: auto; font-size: 12px; }
  #connection.live { color: var(--ok); }
  #actors { overflow: auto; border-right: 1px solid var(--line); padding: 6px 0; }
  #actors h2 { font-size: 11px; text-transform: uppercase; letter-spacing: .06em; color: var(--dim); margin: 10px 12px 4px; }
  .actor { padding: 5px 12px; cursor: pointer; border-left: 3px solid transparent; }
  .actor:hover { background: #1d252e; }
  .actor.selected { background: #1f2a36; border-left-color: var(--accent); }
  .actor .name { font-weight: 600; }
  .actor .meta { color: var(--dim); font-size: 12px; }
  .state { display: inline-block; padding: 0 6px; border-radius: 8px; background: #26313d; font-size: 12px; }
  .state.open, .state.forcedOpen, .state.failed, .state.quarantined, .state.terminated, .state.expired { background: #4a2226; color: var(--bad); }
  .state.halfOpen, .state.awaitingDecision, .state.paused, .state.inactive { background: #4a3c1c; color: var(--warn); }
  .state.closed, .state.active, .state.completed { background: #1c3a2d; color: var(--ok); }
  .ended { opacity: .55; }
  main { overflow: auto; padding: 10px 14px; }
  #title { font-size: 15px; font-weight: 600; }
  #controls { margin: 8px 0; display: flex; gap: 8px; flex-wrap: wrap; }
  button { background: #22303d; color: var(--text); border: 1px solid var(--line); border-radius: 4px; padding: 4px 10px; cursor: pointer; }
  button:hover { border-color: var(--accent); }
  #control-result { color: var(--dim); min-height: 1.4em; }
  #control-result.error { color: var(--bad); }
  #chart { overflow: auto; max-height: 46vh; border: 1px solid var(--line); border-radius: 4px; background: #12181e; }
  #chart svg { display: block; }
  #chart .node rect { fill: #1b232c; stroke: #3a4654; }
  #chart .node.compound > rect { fill: #141b22; stroke-dasharray: 4 3; }
  #chart .node.final rect { stroke-width: 3; }
  #chart .node.active > rect { fill: #16324a; stroke: var(--accent); stroke-width: 2.5; }
  #chart .node text { fill: var(--text); font-size: 12px; }
  #chart .edge path { fill: none; stroke: #5b6b7b; stroke-width: 1.2; }
  #chart .edge text { fill: var(--dim); font-size: 10px; }
  #stats { margin: 10px 0; }
  #stats table { border-collapse: collapse; font-size: 12px; }
  #stats th, #stats td { padding: 2px 10px 2px 0; text-align: right; }
  #stats th:first-child, #stats td:first-child { text-align: left; }
  #stats th { color: var(--dim); font-weight: 500; }
  #stats .low { color: var(--bad); }
  #details { white-space: pre-wrap; font: 12px/1.4 ui-monospace, monospace; color: var(--dim); max-height: 180px; overflow: auto; }
  footer { grid-column: 1 / 3; border-top: 1px solid var(--line); display: grid; grid-template-rows: auto 1fr; min-height: 0; }
  #filters { display: flex; gap: 8px; padding: 6px 14px; background: var(--panel); align-items: center; }
  #filters input, #filters select { background: #0f1419; color: var(--text); border: 1px solid var(--line); border-radius: 4px; padding: 3px 6px; }
  #log { overflow: auto; font: 12px/1.5 ui-monospace, monospace; padding: 4px 14px; }
  .entry .at { color: var(--dim); }
  .entry .kind { color: var(--accent); }
</style>
</head>
<body>
<header><h1>Forge Kernel inspector</h1><span id="connection">connecting…</span><span id="counts"></span><span id="cluster" title="kernel processes"></span></header>
<nav id="actors" aria-label="actors"></nav>
<main>
  <div id="title">Select an actor</div>
  <div id="controls"></div>
  <div id="control-result" role="status"></div>
  <div id="chart"></div>
  <section id="stats" aria-label="statistics"></section>
  <div id="details"></div>
</main>
<footer>
  <div id="filters">
    <strong>Transitions</strong>
    <select id="filter-kind" aria-label="kind"><option value="">all kinds</option><option>overlay</option><option>breaker</option><option>pipeline</option><option>cascade</option></select>
    <input id="filter-actor" placeholder="actor id or name" aria-label="actor">
    <input id="filter-correlation" placeholder="correlation id" aria-label="correlation id">
    <span id="log-count"></span>
  </div>
  <div id="log" aria-live="polite"></div>
</footer>
<script>
(() => {
  const token = new URLSearchParams(location.search).get('token');
  const auth = token ? { authorization: 'Bearer ' + token } : {};
  const KINDS = ['overlay', 'breaker', 'pipeline', 'cascade'];
  const TITLES = { overlay: 'Overlays', breaker: 'Circuit breakers', pipeline: 'Pipeline runs', cascade: 'Cascade chains' };
  const MAX_LOG = 2000;
  let actors = { live: [], ended: [] };
  let selected = null;
  const charts = {};
  const records = [];
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === 'class') node.className = v; else if (k.startsWith('on')) node.addEventListener(k.slice(2), v); else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  };
  const svgEl = (tag, attrs) => {
    const node = document.createElementNS('http://www.w3.org/2000/svg', tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    return node;
  };
  const api = async (path, init) => {
    const res = await fetch(path, { ...init, headers: { ...auth, ...(init && init.headers) } });
    const body = await res.json();
    if (!res.ok) throw Object.assign(new Error(body.error ? body.error.code + ': ' + body.error.message : res.statusText), { status: res.status });
    return body;
  };
  const summary = (a) => {
    const d = a.details || {};
    if (a.kind === 'overlay') {
      const s = d.stats || { calls: 0, successRate: 1, fuelUsed: 0, durationMs: { p95: 0 } };
      return 'breaker ' + d.breaker + ' · ' + s.calls + ' calls · ' + pct(s.successRate) + ' ok · p95 ' + ms(s.durationMs.p95) + ' · fuel ' + s.fuelUsed;
    }
    if (a.kind === 'breaker') return d.consecutiveFaults + ' consecutive faults · ' + d.openings + ' openings';
    if (a.kind === 'pipeline') return 'phase ' + a.state + ' · ' + (d.phases || []).length + ' phases done';
    if (a.kind === 'cascade') return d.hops + '/' + d.maxHops + ' hops · ' + (d.visited || []).join(' → ');
    return '';
  };

  const pct = (rate) => Math.round(rate * 1000) / 10 + '%';
  const ms = (value) => (value < 10 ? Math.round(value * 100) / 100 : Math.round(value)) + ' ms';

  /** The statistics panel: per overlay (calls, success, p50/p95/max, fuel) and per phase of the pipeline. */
  async function renderStats() {
    let stats;
    try { stats = await api('/api/stats'); } catch (error) { return; }
    const table = (head, rows) => el('table', {}, el('tr', {}, ...head.map((h) => el('th', {}, h))), ...rows.map((cells) => el('tr', {}, ...cells.map((c) => (c instanceof Node ? c : el('td', {}, String(c)))))));
    const rate = (r) => el('td', { class: r < 0.95 ? 'low' : '' }, pct(r));
    const overlays = stats.overlays.map((o) => [o.name + '@' + o.version, o.calls, rate(o.successRate), o.faults, o.rejected, o.skippedEvents, ms(o.durationMs.p50), ms(o.durationMs.p95), ms(o.durationMs.max), o.fuelUsed]);
    const phases = Object.entries(stats.phases).filter(([, p]) => p.runs > 0).map(([name, p]) => [name, p.runs, rate(p.successRate), p.failed, p.skipped, ms(p.p50Ms), ms(p.p95Ms)]);
    $('stats').replaceChildren(
      el('strong', {}, 'Overlays'), table(['overlay', 'calls', 'success', 'faults', 'refused', 'skipped events', 'p50', 'p95', 'max', 'fuel'], overlays),
      ...(phases.length ? [el('strong', {}, 'Phases'), table(['phase', 'runs', 'success', 'failed', 'skipped', 'p50', 'p95'], phases)] : []),
      ...(stats.projection ? [el('strong', {}, 'Neo4j projection'), el('div', { 'data-role': 'projection', class: stats.projection.error ? 'low' : '' },
        stats.projection.behind === 0 ? 'caught up (position ' + stats.projection.position + ')' : stats.projection.behind + ' behind, lag ' + ms(stats.projection.lagMs) + (stats.projection.error ? ' — ' + stats.projection.error : ''))] : []));
  }

  function renderActors() {
    const nav = $('actors');
    nav.textContent = '';
    const all = [...actors.live.map((a) => ({ ...a, ended: false })), ...actors.ended.map((a) => ({ ...a, ended: true }))];
    for (const kind of KINDS) {
      const group = all.filter((a) => a.kind === kind);
      nav.append(el('h2', { 'data-kind-group': kind }, TITLES[kind] + ' (' + group.filter((a) => !a.ended).length + ')'));
      for (const a of group) {
        const item = el('div', { class: 'actor' + (a.ended ? ' ended' : '') + (selected === a.id ? ' selected' : ''), 'data-actor-id': a.id, 'data-kind': a.kind, onclick: () => select(a.id) },
          el('div', { class: 'name' }, a.label + ' ', el('span', { class: 'state ' + a.state.split('.')[0], 'data-role': 'state' }, a.state)),
          el('div', { class: 'meta' }, summary(a)));
        nav.append(item);
      }
    }
    $('counts').textContent = actors.live.length + ' live actors';
    renderSelected();
  }

  async function select(id) {
    selected = id;
    renderActors();
  }

  function current() {
    return actors.live.find((a) => a.id === selected) || actors.ended.find((a) => a.id === selected);
  }

  async function chartOf(kind) {
    if (!charts[kind]) charts[kind] = api('/api/statecharts/' + kind);
    return charts[kind];
  }

  async function renderSelected() {
    const a = current();
    if (!a) return;
    $('title').textContent = a.kind + ' ' + a.label + ' — ' + a.state + (a.correlationId ? ' · correlation ' + a.correlationId : '');
    $('title').setAttribute('data-state', a.state);
    $('details').textContent = JSON.stringify(a.details, null, 2);
    renderControls(a);
    const { layout } = await chartOf(a.kind);
    if (current() !== a && current() && current().id !== a.id) return;
    drawChart(layout, new Set(a.activeStates));
  }

  function drawChart(layout, active) {
    const pad = 10;
    const svg = svgEl('svg', { viewBox: -pad + ' ' + -pad + ' ' + (layout.width + 2 * pad) + ' ' + (layout.height + 2 * pad), width: layout.width + 2 * pad, height: layout.height + 2 * pad, role: 'img', 'aria-label': 'statechart' });
    const defs = svgEl('defs');
    const marker = svgEl('marker', { id: 'arrow', viewBox: '0 0 10 10', refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse' });
    marker.append(svgEl('path', { d: 'M0,0 L10,5 L0,10 z', fill: '#5b6b7b' }));
    defs.append(marker);
    svg.append(defs);
    const sorted = [...layout.states].sort((x, y) => (x.type === 'compound' ? 0 : 1) - (y.type === 'compound' ? 0 : 1));
    for (const s of sorted) {
      const g = svgEl('g', { class: 'node ' + s.type + (active.has(s.id) ? ' active' : ''), 'data-state-id': s.id });
      g.append(svgEl('rect', { x: s.x, y: s.y, width: s.width, height: s.height, rx: s.type === 'final' ? 16 : 6 }));
      const label = svgEl('text', { x: s.x + (s.type === 'compound' ? 10 : s.width / 2), y: s.type === 'compound' ? s.y + 18 : s.y + s.height / 2 + 4, 'text-anchor': s.type === 'compound' ? 'start' : 'middle' });
      label.textContent = s.key;
      g.append(label);
      svg.append(g);
    }
    for (const t of layout.transitions) {
      if (t.points.length < 2) continue;
      const g = svgEl('g', { class: 'edge' });
      g.append(svgEl('path', { d: 'M' + t.points.map((p) => p.x + ',' + p.y).join(' L'), 'marker-end': 'url(#arrow)' }));
      if (t.labelAt) {
        const text = svgEl('text', { x: t.labelAt.x, y: t.labelAt.y + 10 });
        text.textContent = t.label;
        g.append(text);
      }
      svg.append(g);
    }
    $('chart').replaceChildren(svg);
    const lit = [...svg.querySelectorAll('.node.active')].pop();
    if (lit) {
      const box = lit.getBBox();
      const chart = $('chart');
      chart.scrollLeft = Math.max(0, box.x + pad - chart.clientWidth / 2);
      chart.scrollTop = Math.max(0, box.y + pad - chart.clientHeight / 2);
    }
  }

  function renderControls(a) {
    const box = $('controls');
    box.textContent = '';
    const button = (action, text, target) => box.append(el('button', { 'data-action': action, onclick: () => control(action, target || a.id) }, text));
    if (a.kind === 'pipeline' && a.status === 'active') {
      if (a.state.startsWith('awaitingDecision')) { button('approve', 'Approve'); button('reject', 'Reject'); }
      if (a.state === 'paused') button('resume', 'Resume');
      button('cancel', 'Cancel run');
    }
    if (a.kind === 'breaker' && a.status === 'active') { button('reset-breaker', 'Reset breaker', a.details.overlayId); button('force-open', 'Force open', a.details.overlayId); }
    if (a.kind === 'overlay' && a.status === 'active') { button('activate', 'Activate'); button('deactivate', 'Deactivate'); }
  }

  async function control(action, target) {
    const out = $('control-result');
    out.className = '';
    out.textContent = action + ' ' + target + '…';
    try {
      await api('/api/control', { method: 'POST', headers: { 'content-type': 'application/json', 'x-forge-inspector': '1' }, body: JSON.stringify({ action, target, by: 'inspector' }) });
      out.textContent = action + ' ' + target + ': done';
      refresh();
    } catch (error) {
      out.className = 'error';
      out.textContent = action + ' ' + target + ': ' + error.message;
    }
  }

  function matches(r) {
    const kind = $('filter-kind').value;
    const actor = $('filter-actor').value.trim();
    const correlation = $('filter-correlation').value.trim();
    return (!kind || r.kind === kind) && (!actor || r.actorId.includes(actor) || r.label.includes(actor)) && (!correlation || (r.correlationId || '').includes(correlation));
  }

  function entry(r) {
    const text = r.type === 'actor.transitioned' ? r.from + ' → ' + r.state + ' on ' + r.event : r.type === 'actor.created' ? 'created in ' + r.state : 'stopped in ' + r.state;
    return el('div', { class: 'entry', 'data-testid': 'log-entry', 'data-kind': r.kind, 'data-actor-id': r.actorId },
      el('span', { class: 'at' }, new Date(r.at).toISOString().slice(11, 23) + ' '), el('span', { class: 'kind' }, r.kind + ' '), r.label + ' (' + r.actorId + '): ' + text + (r.correlationId ? ' · ' + r.correlationId : ''));
  }

  function renderLog() {
    const shown = records.filter(matches);
    $('log').replaceChildren(...shown.slice(-500).map(entry));
    $('log-count').textContent = shown.length + ' of ' + records.length;
    $('log').scrollTop = $('log').scrollHeight;
  }
  for (const id of ['filter-kind', 'filter-actor', 'filter-correlation']) $(id).addEventListener('input', renderLog);

  let pending = null;
  async function refresh() {
    pending = null;
    try { actors = await api('/api/actors'); renderActors(); renderStats(); } catch (error) { $('connection').textContent = 'error: ' + error.message; }
  }
  async function refreshCluster() {
    try {
      const { members } = await api('/api/cluster');
      $('cluster').textContent = members.length + ' kernel process' + (members.length === 1 ? '' : 'es') + ': ' + members.map((m) => m.processId + (m.self ? ' (this one)' : '') + ' · ' + m.activeRuns + ' runs').join(', ');
    } catch (error) { $('cluster').textContent = ''; }
  }
  refreshCluster();
  setInterval(refreshCluster, 3000);
  renderStats();
  setInterval(renderStats, 2000);
  const soon = () => { if (!pending) pending = setTimeout(refresh, 120); };

  function connect() {
    const last = records.length ? records[records.length - 1].seq : 0;
    const source = new EventSource('/api/events?after=' + last + (token ? '&token=' + encodeURIComponent(token) : ''));
    source.onopen = () => { $('connection').textContent = 'live'; $('connection').className = 'live'; refresh(); };
    source.onmessage = (message) => {
      const record = JSON.parse(message.data);
      records.push(record);
      if (records.length > MAX_LOG) records.shift();
      if (matches(record)) {
        $('log').append(entry(record));
        while ($('log').childElementCount > 500) $('log').firstChild.remove();
        $('log').scrollTop = $('log').scrollHeight;
      }
      $('log-count').textContent = records.filter(matches).length + ' of ' + records.length;
      soon();
    };
    source.onerror = () => { $('connection').textContent = 'reconnecting…'; $('connection').className = ''; };
  }
  refresh();
  connect();
})();
</script>
</body>
</html>
`;
