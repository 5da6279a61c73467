// Stella's web workspace, live. The pages read without this file; with it they follow the
// server's event streams (read with fetch, so heartbeat comments count as signs of life),
// reconnect with exponential backoff, show a banner after 90 s without an event or a
// heartbeat, and poll the JSON API when streams are unavailable or keep failing. Every value
// shown goes through textContent or comes from the server's escaped HTML; nothing is eval'd.
(function () {
  'use strict';

  var STALE_MS = 90000;
  var BACKOFF_MIN = 1000;
  var BACKOFF_MAX = 30000;
  var FAILURES_BEFORE_POLLING = 5;
  var POLL_MS = 5000;
  var MAX_LOG_NODES = 5000;
  var MAX_FRAME = 1 << 20;
  var FINAL = { 'run.succeeded': 1, 'run.failed': 1, 'run.cancelled': 1 };

  var body = document.body;
  var page = body.getAttribute('data-page');
  var liveBadge = document.getElementById('live');
  var banner = document.getElementById('banner');
  var lastSign = Date.now();
  var watching = false;

  function status(mode, text) {
    liveBadge.hidden = false;
    liveBadge.className = 'live ' + mode;
    liveBadge.textContent = text;
  }

  function alive() {
    lastSign = Date.now();
    if (!banner.hidden) banner.hidden = true;
  }

  function stateClass(s) {
    return /^[a-z]{1,20}$/.test(s || '') ? 's-' + s : 's-unknown';
  }

  function duration(ms) {
    if (ms === null || ms === undefined) return '\u2013';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    if (ms < 3600000) return Math.floor(ms / 60000) + ' m ' + ('0' + Math.floor(ms / 1000) % 60).slice(-2) + ' s';
    return Math.floor(ms / 3600000) + ' h ' + ('0' + Math.floor(ms / 60000) % 60).slice(-2) + ' m';
  }

  // One stream: fetch + a Server-Sent Events parser. Calls onEvent(type, id, data) per event,
  // and resolves when the server ends the stream; rejects on any failure.
  function stream(url, onEvent, onOpen, controller) {
    return fetch(url, { headers: { Accept: 'text/event-stream' }, cache: 'no-store', signal: controller.signal })
      .then(function (resp) {
        if (!resp.ok || !resp.body || !resp.body.getReader) throw new Error('HTTP ' + resp.status);
        onOpen();
        var reader = resp.body.getReader();
        var decoder = new TextDecoder();
        var buf = '';
        var ev = { id: null, type: 'message', data: [] };
        function pump() {
          return reader.read().then(function (r) {
            if (r.done) return;
            buf += decoder.decode(r.value, { stream: true });
            var i;
            while ((i = buf.indexOf('\n')) >= 0) {
              var line = buf.slice(0, i).replace(/\r$/, '');
              buf = buf.slice(i + 1);
              alive();
              if (line === '') {
                if (ev.data.length) onEvent(ev.type, ev.id, ev.data.join('\n'));
                ev = { id: null, type: 'message', data: [] };
              } else if (line.charAt(0) !== ':') {
                var c = line.indexOf(':');
                var k = c < 0 ? line : line.slice(0, c);
                var v = c < 0 ? '' : line.slice(c + 1).replace(/^ /, '');
                if (k === 'id') ev.id = v;
                else if (k === 'event') ev.type = v;
                else if (k === 'data') ev.data.push(v);
              }
            }
            if (buf.length > MAX_FRAME) throw new Error('a frame too large');
            return pump();
          });
        }
        return pump();
      });
  }

  // Keeps one stream open: reconnects with exponential backoff (and jitter), watches for 90 s
  // of silence, and falls back to polling after repeated failures.
  function follow(opts) {
    var failures = 0;
    var backoff = BACKOFF_MIN;
    var controller = null;
    var stopped = false;
    var polling = null;

    function poll() {
      if (polling || stopped) return;
      status('poll', 'polling every ' + POLL_MS / 1000 + ' s');
      var tick = function () {
        if (stopped) return;
        opts.poll().then(function (more) {
          alive();
          if (more === false) stop();
        }, function () {});
      };
      polling = setInterval(tick, POLL_MS);
      tick();
    }

    function connect() {
      if (stopped) return;
      if (!window.fetch || !window.ReadableStream || !window.TextDecoder || !window.AbortController) return poll();
      controller = new AbortController();
      var opened = 0;
      status('', 'connecting\u2026');
      stream(opts.url(), opts.onEvent, function () {
        opened = Date.now();
        failures = 0;
        status('on', 'live');
        alive();
        opts.onOpen();
      }, controller).then(function () {
        if (!stopped) retry(opened && Date.now() - opened > 10000);
      }, function () {
        if (!stopped) retry(false);
      });
    }

    function retry(wasHealthy) {
      if (wasHealthy) {
        backoff = BACKOFF_MIN;
      } else {
        failures += 1;
      }
      if (failures >= FAILURES_BEFORE_POLLING) {
        banner.textContent = 'The live stream keeps failing: polling the API every ' + POLL_MS / 1000 + ' s instead.';
        banner.hidden = false;
        return poll();
      }
      var wait = Math.min(backoff, BACKOFF_MAX);
      backoff = Math.min(backoff * 2, BACKOFF_MAX);
      status('off', 'reconnecting in ' + Math.round(wait / 1000) + ' s');
      setTimeout(connect, wait * (0.8 + Math.random() * 0.4));
    }

    function stop() {
      stopped = true;
      if (controller) controller.abort();
      if (polling) clearInterval(polling);
      status('', 'finished');
    }

    setInterval(function () {
      if (stopped || Date.now() - lastSign < STALE_MS) return;
      banner.textContent = 'No event or heartbeat for ' + Math.round((Date.now() - lastSign) / 1000) +
        ' s: what you see may be stale. Reconnecting\u2026';
      banner.hidden = false;
      if (controller && !polling) controller.abort();
    }, 5000);

    watching = true;
    connect();
    return { stop: stop };
  }

  // Calls fn at most once per `ms`, the last call winning.
  function debounce(fn, ms) {
    var timer = null;
    return function () {
      if (timer) return;
      timer = setTimeout(function () { timer = null; fn(); }, ms);
    };
  }

  function json(url) {
    return fetch(url, { cache: 'no-store', headers: { Accept: 'application/json' } }).then(function (r) {
      if (!r.ok) throw new Error('HTTP ' + r.status);
      return r.json();
    });
  }

  // ---- the runs table ----------------------------------------------------------------------

  function cell(tr, cls, text) {
    var td = document.createElement('td');
    td.className = cls;
    if (text !== undefined) td.textContent = text;
    tr.appendChild(td);
    return td;
  }

  function progressCell(tr, p) {
    var td = cell(tr, 'progress');
    var bar = document.createElement('progress');
    bar.max = p && p.total ? p.total : 1;
    bar.value = p ? p.done : 0;
    var count = document.createElement('span');
    count.className = 'count';
    count.textContent = (p ? p.done : 0) + '/' + (p && p.total !== null && p.total !== undefined ? p.total : '?');
    td.appendChild(bar);
    td.appendChild(count);
  }

  function row(r) {
    var tr = document.createElement('tr');
    tr.className = 'run ' + stateClass(r.state);
    tr.setAttribute('data-id', r.id);
    var a = document.createElement('a');
    a.href = '/runs/' + encodeURIComponent(r.id);
    a.textContent = r.id;
    cell(tr, 'id').appendChild(a);
    cell(tr, 'pack', r.pack || '');
    var t = r.trigger || {};
    cell(tr, 'trigger', t.retryOf ? 'retry of ' + t.retryOf : t.resumeOf ? 'resume of ' + t.resumeOf : t.schedule ? 'schedule ' + t.schedule : 'commit');
    var st = cell(tr, 'state');
    var badge = document.createElement('span');
    badge.className = 'badge ' + stateClass(r.state);
    badge.textContent = r.state;
    st.appendChild(badge);
    if (r.error && r.error.code) {
      var code = document.createElement('span');
      code.className = 'code';
      code.textContent = r.error.code;
      st.appendChild(code);
    }
    progressCell(tr, r.progress);
    cell(tr, 'duration', duration(r.durationMs));
    cell(tr, 'gate', r.gate || '');
    return tr;
  }

  function sameRow(a, b) {
    return a.className.replace(' flash', '') === b.className && a.textContent === b.textContent;
  }

  function cards(active) {
    var runs = active.runs || [];
    var of = function (states) { return runs.filter(function (r) { return states.indexOf(r.state) >= 0; }); };
    var fill = function (cls, list, num, extra) {
      var card = document.querySelector('.card.' + cls);
      if (!card) return;
      card.querySelector('.num').textContent = num;
      var ul = card.querySelector('ul');
      if (!list) return;
      ul.textContent = '';
      list.slice(0, 5).forEach(function (r) {
        var li = document.createElement('li');
        var a = document.createElement('a');
        a.href = '/runs/' + encodeURIComponent(r.id);
        a.textContent = r.id;
        var span = document.createElement('span');
        span.className = 'count';
        span.textContent = extra(r);
        li.appendChild(a);
        li.appendChild(document.createTextNode(' '));
        li.appendChild(span);
        ul.appendChild(li);
      });
    };
    var running = of(['running']);
    var waiting = of(['waiting']);
    fill('c-running', running, running.length + (active.next ? '+' : ''), function (r) {
      return r.progress.done + '/' + (r.progress.total === null ? '?' : r.progress.total);
    });
    fill('c-waiting', waiting, waiting.length, function (r) { return r.gate || ''; });
    fill('c-queued', null, of(['requested', 'planned']).length + (active.next ? '+' : ''));
  }

  // The notification card: per target, what waits, what went, what failed (no URL, no secret).
  function notifyCard(state) {
    var card = document.querySelector('.card.c-notify');
    var targets = (state && state.targets) || [];
    if (!card) return;
    card.hidden = targets.length === 0;
    card.querySelector('.num').textContent = targets.reduce(function (n, t) { return n + t.pending; }, 0);
    var ul = card.querySelector('ul');
    ul.textContent = '';
    targets.slice(0, 5).forEach(function (t) {
      var li = document.createElement('li');
      li.textContent = t.id + ' ';
      var span = document.createElement('span');
      span.className = 'count';
      span.textContent = t.pending + ' waiting · ' + t.delivered + ' sent · ' + t.failed + ' failed';
      if (t.lastError) li.title = 'last error: ' + t.lastError + (t.lastErrorAt ? ' (' + t.lastErrorAt + ')' : '');
      li.appendChild(span);
      ul.appendChild(li);
    });
  }

  function runsPage() {
    var table = document.getElementById('runs');
    if (!table) return;
    var api = table.getAttribute('data-api');
    var tbody = table.tBodies[0];
    var firstPage = table.getAttribute('data-live') === '1';

    function refresh() {
      var list = json(api).then(function (pageOf) {
        if (!firstPage) {
          // Later pages update the rows they show; they never take new ones.
          pageOf.runs = pageOf.runs.filter(function (r) { return tbody.querySelector('tr[data-id="' + CSS.escape(r.id) + '"]'); });
        }
        var fresh = pageOf.runs.map(row);
        var old = {};
        Array.prototype.forEach.call(tbody.rows, function (tr) { old[tr.getAttribute('data-id')] = tr; });
        var before = null;
        for (var i = fresh.length - 1; i >= 0; i--) {
          var tr = fresh[i];
          var was = old[tr.getAttribute('data-id')];
          if (was && sameRow(was, tr)) {
            tr = was;
          } else {
            tr.className += ' flash';
          }
          delete old[tr.getAttribute('data-id')];
          tbody.insertBefore(tr, before || null);
          if (was && was !== tr) was.remove();
          before = tr;
        }
        if (firstPage) Object.keys(old).forEach(function (id) { old[id].remove(); });
        var empty = document.getElementById('empty');
        if (empty) empty.hidden = tbody.rows.length > 0;
      });
      var active = json('/api/v1/runs?state=requested,planned,running,waiting&limit=500').then(cards);
      json('/api/v1/notifications').then(notifyCard).catch(function () {});
      return Promise.all([list, active]);
    }

    var soon = debounce(function () { refresh().catch(function () {}); }, 1000);
    follow({
      url: function () { return '/api/v1/events'; },
      onOpen: soon,
      // A log line changes no row; a step or a run that starts or ends does.
      onEvent: function (type) { if (type !== 'step.log') soon(); },
      poll: refresh,
    });
  }

  // ---- one run -----------------------------------------------------------------------------

  var REGIONS = ['summary', 'graph', 'gates', 'commands', 'artifacts', 'evidence'];

  function runPage() {
    var id = body.getAttribute('data-run');
    var stepFilter = body.getAttribute('data-step') || '';
    var log = document.getElementById('log');
    var followBox = document.getElementById('follow');
    var base = '/api/v1/runs/' + encodeURIComponent(id);
    var lastSeq = null;
    var fresh = true;
    var follower = null;

    function scroll() {
      if (followBox && followBox.checked) log.scrollTop = log.scrollHeight;
    }
    scroll();

    var logEmpty = log.textContent.length === 0;
    function append(text) {
      log.appendChild(document.createTextNode((logEmpty ? '' : '\n') + text));
      logEmpty = false;
      while (log.childNodes.length > MAX_LOG_NODES) log.removeChild(log.firstChild);
      scroll();
    }

    // The line `stella runs logs` prints for an event (the API's logs route, the same rule).
    function line(e) {
      if (stepFilter) return e.type === 'step.log' && e.step === stepFilter ? (e.msg || '') : null;
      if (e.type === 'step.log') return '[' + (e.step || '') + '] ' + (e.msg || '');
      if (e.type.indexOf('run.') === 0 || e.type === 'gate.waiting' || e.type === 'step.failed') {
        return '-- ' + e.type + (e.msg ? ': ' + e.msg : '');
      }
      return null;
    }

    // The server's own rendering of the page, its live regions swapped in.
    function regions() {
      return fetch(location.pathname + location.search, { cache: 'no-store' }).then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.text();
      }).then(function (html) {
        var doc = new DOMParser().parseFromString(html, 'text/html');
        REGIONS.forEach(function (name) {
          var now = document.getElementById(name);
          var next = doc.getElementById(name);
          if (!now || !next || now.innerHTML === next.innerHTML) return;
          // Lists of children a reader opened or closed stay so.
          var open = {};
          now.querySelectorAll('[data-step] > details').forEach(function (d) {
            open[d.parentNode.getAttribute('data-step')] = d.open;
          });
          var fresh = document.importNode(next, true);
          fresh.querySelectorAll('[data-step] > details').forEach(function (d) {
            var k = d.parentNode.getAttribute('data-step');
            if (Object.prototype.hasOwnProperty.call(open, k)) d.open = open[k];
          });
          now.replaceWith(fresh);
        });
        var finished = doc.body.getAttribute('data-final') === '1';
        body.setAttribute('data-final', finished ? '1' : '0');
        return finished;
      });
    }
    var soon = debounce(function () { regions().catch(function () {}); }, 500);

    if (body.getAttribute('data-final') === '1') {
      status('', 'finished');
      return;
    }
    if (followBox) followBox.parentNode.hidden = false;
    var lastShape = null;
    follower = follow({
      url: function () { return base + '/events' + (lastSeq !== null ? '?after=' + encodeURIComponent(lastSeq) : ''); },
      onOpen: function () { soon(); },
      onEvent: function (type, seq, data) {
        var e;
        try { e = JSON.parse(data); } catch (err) { return; }
        if (typeof e !== 'object' || e === null || typeof e.type !== 'string') return;
        if (fresh) {
          // The stream replays the run from its start: the log is rebuilt from it.
          log.textContent = '';
          logEmpty = true;
          var note = document.getElementById('log-note');
          if (note) note.hidden = true;
          fresh = false;
        }
        if (seq !== null && /^\d+$/.test(seq)) lastSeq = seq;
        var text = line(e);
        if (text !== null) append(text);
        if (type !== 'step.log') soon();
        if (FINAL[type]) {
          regions().catch(function () {});
          follower.stop();
        }
      },
      poll: function () {
        return json(base).then(function (run) {
          var shape = JSON.stringify([run.state, run.progress, run.steps, run.gates, run.artifacts]);
          var changed = shape !== lastShape;
          lastShape = shape;
          var done = run.state === 'succeeded' || run.state === 'failed' || run.state === 'cancelled';
          if (!changed) return !done;
          var logs = fetch(base + '/logs' + (stepFilter ? '?step=' + encodeURIComponent(stepFilter) : ''), { cache: 'no-store' })
            .then(function (r) { return r.ok ? r.text() : null; })
            .then(function (text) {
              if (text === null) return;
              log.textContent = text.replace(/\n$/, '');
              logEmpty = log.textContent.length === 0;
              scroll();
            });
          return Promise.all([regions(), logs]).then(function () { return !done; });
        });
      },
    });
  }

  if (page === 'runs') runsPage();
  else if (page === 'run') runPage();
  if (!watching && liveBadge && page !== 'run') liveBadge.hidden = true;
})();
