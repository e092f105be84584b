/* Small SVG charts for the dashboard: no library, nothing fetched. Exposes window.Charts. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";

  function svg(name, attrs, children) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    for (const child of children || []) node.append(child);
    return node;
  }

  function title(text) {
    const node = svg("title");
    node.textContent = text;
    return node;
  }

  // Round steps (1, 2, 5 x 10^n, whole numbers) from 0 to at least max.
  function ticks(max, count) {
    const top = Math.max(max, 1);
    const raw = top / count;
    const magnitude = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = Math.max(1, [1, 2, 5, 10].map((m) => m * magnitude).find((s) => s >= raw));
    const values = [];
    for (let v = 0; v <= top + step / 2 && values.length <= count + 1; v += step) values.push(v);
    if (values[values.length - 1] < top) values.push(values[values.length - 1] + step);
    return values;
  }

  /* Stacked columns, one per point. series: [{key, label, cls}], bottom first.
     options: {label(point) -> x-axis text, describe(point) -> tooltip heading, name}. */
  function columns(points, series, options) {
    const width = 600, height = 220, left = 44, right = 8, top = 10, bottom = 30;
    const plotW = width - left - right, plotH = height - top - bottom;
    const totals = points.map((p) => series.reduce((sum, s) => sum + p[s.key], 0));
    const scale = ticks(Math.max(0, ...totals), 4);
    const yMax = scale[scale.length - 1];
    const y = (v) => top + plotH - (v / yMax) * plotH;
    const slot = plotW / Math.max(points.length, 1);
    const barW = Math.max(1, slot * 0.78);
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, class: "chart", role: "img",
      "aria-label": options.name,
    });
    const grid = svg("g", { class: "grid" });
    for (const value of scale) {
      grid.append(svg("line", { x1: left, x2: width - right, y1: y(value), y2: y(value) }));
      const text = svg("text", { x: left - 6, y: y(value) + 4, "text-anchor": "end" });
      text.textContent = value.toLocaleString();
      grid.append(text);
    }
    chart.append(grid);
    const bars = svg("g", { class: "bars" });
    points.forEach((point, i) => {
      let base = 0;
      const x = left + i * slot + (slot - barW) / 2;
      for (const s of series) {
        const value = point[s.key];
        if (value > 0) {
          const rect = svg("rect", {
            x: x.toFixed(2), width: barW.toFixed(2), class: s.cls,
            y: y(base + value).toFixed(2), height: (y(base) - y(base + value)).toFixed(2),
          }, [title(`${options.describe(point)}\n${s.label}: ${value.toLocaleString()}`)]);
          bars.append(rect);
        }
        base += value;
      }
    });
    chart.append(bars);
    const axis = svg("g", { class: "axis" });
    // A label every ~140 units; one near an edge is pulled in, one that would then touch
    // its neighbour is left out (widths estimated: the chart is drawn before it is shown).
    const every = Math.max(1, Math.ceil(points.length / Math.floor(plotW / 140)));
    let taken = 0;
    points.forEach((point, i) => {
      if (i % every) return;
      const label = options.label(point, i);
      const half = label.length * 3.5;
      const x = Math.min(Math.max(left + i * slot + slot / 2, left + half), width - right - half);
      if (x - half < taken + 8) return;
      taken = x + half;
      const text = svg("text", { x: x.toFixed(1), y: height - 10, "text-anchor": "middle" });
      text.textContent = label;
      axis.append(text);
    });
    axis.append(svg("line", { x1: left, x2: width - right, y1: y(0), y2: y(0) }));
    chart.append(axis);
    return chart;
  }

  /* A horizontal bar for a table cell: people's part, then machines' part, out of max. */
  function meter(people, machines, max) {
    const width = 120, height = 12;
    const unit = max > 0 ? width / max : 0;
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, class: "meter", role: "img",
      "aria-label": `${people} by people, ${machines} by machines`,
    });
    chart.append(svg("rect", { x: 0, y: 0, width, height, class: "track" }));
    if (people > 0) {
      chart.append(svg("rect", { x: 0, y: 0, width: people * unit, height, class: "human" }));
    }
    if (machines > 0) {
      chart.append(svg("rect", {
        x: people * unit, y: 0, width: machines * unit, height, class: "machine",
      }));
    }
    return chart;
  }

  /* One horizontal bar split into parts [{cls, label, value}], out of max (a table cell's
     or a panel's width). */
  function stack(parts, max) {
    const width = 600, height = 14;
    const unit = max > 0 ? width / max : 0;
    const chart = svg("svg", {
      viewBox: `0 0 ${width} ${height}`, class: "stack", role: "img", preserveAspectRatio: "none",
      "aria-label": parts.filter((p) => p.value > 0).map((p) => `${p.label}: ${p.value}`).join(", "),
    });
    chart.append(svg("rect", { x: 0, y: 0, width, height, class: "track" }));
    let x = 0;
    for (const part of parts) {
      if (part.value <= 0) continue;
      chart.append(svg("rect", { x, y: 0, width: part.value * unit, height, class: part.cls },
        [title(`${part.label}: ${part.value.toLocaleString()}`)]));
      x += part.value * unit;
    }
    return chart;
  }

  window.Charts = { columns, meter, stack, ticks };
})();
