// The live dashboard's refresh (templates/dashboard/dashboard.html): every few seconds,
// fetch /dashboard/data.json and redraw the page in place from it, no reload. Written for
// this page alone, no library. Text from the server goes into the page as text, never as
// HTML: attempt errors come from partners.
(function () {
  "use strict";

  const root = document.getElementById("dashboard");
  if (!root) {
    return;
  }
  const SVG_NS = "http://www.w3.org/2000/svg";
  // The chart's geometry: the same as dualsend_app/dashboard/chart.py draws the first view.
  const WIDTH = 720, HEIGHT = 200, LEFT = 40, RIGHT = 8, TOP = 10, BOTTOM = 22, BAR_GAP = 2;
  const PLOT_WIDTH = WIDTH - LEFT - RIGHT, PLOT_HEIGHT = HEIGHT - TOP - BOTTOM;

  const dataUrl = root.dataset.url;
  const refreshMs = Number(root.dataset.refreshSeconds) * 1000;
  let windowSeconds = root.dataset.window;
  let timer = null;
  let latestRequest = 0;

  function byId(id) {
    return document.getElementById(id);
  }

  function element(tag, attributes, text) {
    const node = document.createElement(tag);
    Object.entries(attributes || {}).forEach(([name, value]) => node.setAttribute(name, value));
    if (text !== undefined && text !== null) {
      node.textContent = String(text);
    }
    return node;
  }

  function svgElement(tag, attributes, text) {
    const node = document.createElementNS(SVG_NS, tag);
    Object.entries(attributes).forEach(([name, value]) => node.setAttribute(name, value));
    if (text !== undefined) {
      node.textContent = text;
    }
    return node;
  }

  function row(cells, attributes) {
    const tr = element("tr", attributes);
    cells.forEach((cell) => tr.appendChild(cell));
    return tr;
  }

  function cell(text, className) {
    return element("td", className ? { class: className } : {}, text);
  }

  function linkCell(href, text) {
    const td = element("td");
    td.appendChild(element("a", { href: href }, text));
    return td;
  }

  function emptyRow(columns, text) {
    return row([element("td", { colspan: columns }, text)], { class: "empty" });
  }

  function replaceRows(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  // Times as the server renders them: UTC, "HH:MM:SS" or "YYYY-MM-DD HH:MM:SS".
  function clock(iso) {
    return iso ? new Date(iso).toISOString().slice(11, 19) : "-";
  }

  function dateTime(iso) {
    return iso ? new Date(iso).toISOString().slice(0, 19).replace("T", " ") : "-";
  }

  function minute(iso) {
    return new Date(iso).toISOString().slice(11, 16);
  }

  function fixed(value, suffix) {
    return value === null || value === undefined ? "-" : value.toFixed(1) + suffix;
  }

  function shortId(id) {
    return id.slice(0, 8);
  }

  // The axis's top: the smallest 1, 2 or 5 × 10^k at or above the tallest bar.
  function scaleTop(value) {
    let top = 1;
    const steps = { 1: 2, 2: 5, 5: 10 };
    while (top < value) {
      const digits = String(top);
      top = steps[digits[0]] * Math.pow(10, digits.length - 1);
    }
    return top;
  }

  function drawChart(orders) {
    const minutes = orders.minutes;
    const totals = minutes.map((m) => Object.values(m.counts).reduce((a, b) => a + b, 0));
    const top = scaleTop(Math.max(0, ...totals));
    const slot = PLOT_WIDTH / minutes.length;
    const bars = [];
    minutes.forEach((m, index) => {
      const x = LEFT + index * slot + BAR_GAP / 2;
      let y = TOP + PLOT_HEIGHT;
      orders.statuses.forEach((status) => {
        const count = m.counts[status];
        if (!count) {
          return;
        }
        const height = (count / top) * PLOT_HEIGHT;
        y -= height;
        const rect = svgElement("rect", {
          class: "status-" + status,
          x: x.toFixed(2),
          y: y.toFixed(2),
          width: (slot - BAR_GAP).toFixed(2),
          height: height.toFixed(2),
        });
        rect.appendChild(svgElement("title", {}, minute(m.start) + " " + status + ": " + count));
        bars.push(rect);
      });
    });
    byId("orders-chart-bars").replaceChildren(...bars);

    const below = TOP + PLOT_HEIGHT + 16;
    const middle = Math.floor(minutes.length / 2);
    const labels = [
      [LEFT - 6, TOP + PLOT_HEIGHT, "0", "end"],
      [LEFT - 6, TOP + 10, String(top), "end"],
      [LEFT, below, minute(minutes[0].start), "start"],
      [LEFT + (middle + 0.5) * slot, below, minute(minutes[middle].start), "middle"],
      [WIDTH - RIGHT, below, minute(minutes[minutes.length - 1].start) + " UTC", "end"],
    ];
    byId("orders-chart-labels").replaceChildren(
      ...labels.map(([x, y, text, anchor]) =>
        svgElement("text", { x: x.toFixed(1), y: y.toFixed(1), "text-anchor": anchor }, text)
      )
    );

    byId("orders-total").textContent = orders.total;
    orders.statuses.forEach((status) => {
      const count = byId("count-" + status);
      if (count) {
        count.textContent = orders.by_status[status];
      }
    });
  }

  function drawCalls(doc) {
    byId("window-label").textContent = doc.window.label;
    replaceRows(
      byId("calls-body"),
      doc.calls.map((calls) =>
        row(
          [
            cell(calls.partner),
            cell(calls.operation),
            cell(calls.calls, "number calls"),
            cell(
              calls.success_rate === null ? "-" : fixed(calls.success_rate * 100, " %"),
              "number success-rate"
            ),
            cell(fixed(calls.p50_ms, " ms"), "number p50"),
            cell(fixed(calls.p95_ms, " ms"), "number p95"),
            cell(fixed(calls.p99_ms, " ms"), "number p99"),
          ],
          { "data-operation": calls.operation }
        )
      )
    );
  }

  function drawBreakers(breakers) {
    replaceRows(
      byId("breakers-body"),
      breakers.map((breaker) => {
        const state = element("td");
        state.appendChild(
          element(
            "span",
            {
              class: "breaker-state state-" + breaker.state,
              title: breaker.detail || breaker.rule,
            },
            breaker.state
          )
        );
        return row(
          [
            cell(breaker.partner),
            state,
            cell(breaker.calls === null ? "-" : breaker.calls, "number"),
            cell(breaker.failures === null ? "-" : breaker.failures, "number"),
            cell(breaker.open_until ? clock(breaker.open_until) + " UTC" : "-"),
          ],
          { id: "breaker-" + breaker.partner, "data-partner": breaker.partner }
        );
      })
    );
  }

  function drawNeedsAttention(waiting) {
    byId("needs-attention-count").textContent = waiting.total;
    const rows = waiting.orders.map((order) =>
      row(
        [
          linkCell(order.admin_url, shortId(order.id)),
          cell(dateTime(order.created_at)),
          cell(order.status_reason),
        ],
        { "data-order": order.id }
      )
    );
    replaceRows(byId("needs-attention-body"), rows.length ? rows : [emptyRow(3, "None.")]);
    byId("needs-attention-more").hidden = waiting.total <= waiting.orders.length;
  }

  function drawFailures(failures) {
    const rows = failures.map((failure) =>
      row(
        [
          cell(clock(failure.started_at)),
          linkCell(failure.admin_url, shortId(failure.order)),
          cell(failure.operation),
          cell(failure.number, "number"),
          cell((failure.status_code === null ? "no answer" : failure.status_code) + " " + failure.error),
          cell(failure.outcome + (failure.will_retry ? ", retried" : "")),
          cell(failure.duration_ms + " ms", "number"),
        ],
        { "data-attempt": failure.attempt }
      )
    );
    replaceRows(byId("failures-body"), rows.length ? rows : [emptyRow(7, "No failed call.")]);
  }

  function draw(doc) {
    drawChart(doc.orders);
    drawCalls(doc);
    drawBreakers(doc.breakers);
    drawNeedsAttention(doc.needs_attention);
    drawFailures(doc.failures);
    const updated = byId("updated-at");
    updated.setAttribute("datetime", doc.generated_at);
    updated.textContent = clock(doc.generated_at) + " UTC";
    root.dataset.generatedAt = doc.generated_at;
    showStatus("live: refreshes every " + refreshMs / 1000 + " s", false);
  }

  function showStatus(text, failing) {
    const status = byId("refresh-status");
    status.textContent = text;
    status.classList.toggle("failing", failing);
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, refreshMs);
  }

  function refresh() {
    const request = ++latestRequest;
    const url = dataUrl + "?window=" + encodeURIComponent(windowSeconds);
    fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then((response) => {
        // A session that ended is sent to the login page: that is no data.
        if (response.redirected) {
          throw new Error("signed out: reload the page to log in again");
        }
        if (!response.ok) {
          throw new Error("the server answered " + response.status);
        }
        return response.json();
      })
      .then((doc) => {
        if (request === latestRequest) {
          draw(doc);
        }
      })
      .catch((error) => {
        if (request === latestRequest) {
          showStatus("refresh failed (" + error.message + "); trying again", true);
        }
      })
      .finally(schedule);
  }

  // The window selector refreshes at once, and the address keeps the choice for a reload.
  const select = byId("window-select");
  select.addEventListener("change", () => {
    windowSeconds = select.value;
    const address = new URL(window.location.href);
    address.searchParams.set("window", windowSeconds);
    window.history.replaceState(null, "", address);
    clearTimeout(timer);
    refresh();
  });
  byId("window-apply").hidden = true;

  showStatus("live: refreshes every " + refreshMs / 1000 + " s", false);
  schedule();
})();
