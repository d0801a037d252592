// How run.mjs prints its figures: numbers, MB, median [min–max] spreads
// and the machine's load.

export const fmt = (x, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "–");
export const mb = (kb) => (Number.isFinite(kb) ? (kb / 1024).toFixed(1) : "–");
export const rtLabel = (rt) => rt ?? "C";
export const fmtLoad = (l) => l.map((x) => fmt(x, 2)).join(" ");
/** "0.62 [0.58–0.66]": median and min–max. */
export const ms = (s, d = 2) =>
  !s || !Number.isFinite(s.median)
    ? "–"
    : s.values.length === 1
    ? fmt(s.median, d)
    : `${fmt(s.median, d)} [${fmt(s.min, d)}–${fmt(s.max, d)}]`;
/** The same for a spread of kB, printed in MB. */
export const mbs = (s) =>
  !s || !Number.isFinite(s.median)
    ? "–"
    : s.values.length === 1
    ? mb(s.median)
    : `${mb(s.median)} [${mb(s.min)}–${mb(s.max)}]`;
export const raw = (s, d = 2) =>
  !s || s.values.length === 0 ? "–" : s.values.map((x) => fmt(x, d)).join(" ");
export const loadLine = (l) =>
  `load average (1 min) ${fmt(l.before[0], 2)} before, ${
    fmt(l.duringMean, 2)
  } mean / ${fmt(l.duringMax, 2)} max during, ${
    fmt(l.after[0], 2)
  } after; CPU used by other processes: ${fmt(l.otherCores, 2)} cores; ${
    fmt(l.seconds, 0)
  } s`;
