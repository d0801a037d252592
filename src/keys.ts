/**
 * Unknown option names: a typo, or an option of another library, must not
 * be ignored in silence (a JavaScript caller would run with defaults it did
 * not choose). {@link checkKeys} throws a `TypeError` naming the key and,
 * where there is one, the option that was probably meant.
 *
 * @module
 */

/** Options of other SMTP libraries, and what to use here instead. */
const FOREIGN: Readonly<Record<string, string>> = {
  size: "maxMessageSize",
  authOptional: "auth: { required: false }",
  authMethods: "auth.mechanisms",
  onAuth: "auth.verify",
  onData: "onMessage",
  secure: "implicitTls",
  key: "tls.key",
  cert: "tls.cert",
  ca: "tls.ca",
  host: "hostname",
  name: "serverName",
  banner: "serverName",
  maxClients: "maxConnections",
  socketTimeout: "idleTimeout",
  allowInsecureAuthentication: "allowInsecureAuth",
};

/**
 * Edit distance (Damerau's: a swap of two neighbours is one edit), cut off
 * above `max` (then it returns max + 1).
 */
function distance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  const rows: number[][] = [Array.from({ length: b.length + 1 }, (_, i) => i)];
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    let best = i;
    for (let j = 1; j <= b.length; j++) {
      let v = Math.min(
        rows[i - 1][j] + 1,
        row[j - 1] + 1,
        rows[i - 1][j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1),
      );
      if (
        i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]
      ) v = Math.min(v, rows[i - 2][j - 2] + 1);
      row.push(v);
      if (v < best) best = v;
    }
    if (best > max) return max + 1;
    rows.push(row);
  }
  return rows[a.length][b.length];
}

/**
 * The known name closest to `key`: the same name in another case, else one
 * within a third of its length in edits (at most 3), else `undefined`.
 */
export function suggest(
  key: string,
  known: Iterable<string>,
): string | undefined {
  const lower = key.toLowerCase();
  let best: string | undefined;
  let bestD = Math.min(3, Math.max(1, Math.floor(key.length / 3)));
  for (const k of known) {
    if (k.toLowerCase() === lower) return k;
    const d = distance(lower, k.toLowerCase(), bestD);
    if (d <= bestD && (best === undefined || d < bestD)) {
      best = k;
      bestD = d;
    }
  }
  return best;
}

/**
 * Throws a `TypeError` for the first own key of `value` that is not in
 * `known`: `Cannot use option tls.cret: unknown option (did you mean
 * tls.cert?)`. `path` is the option's name as the message shows it (`""`
 * for the top level).
 */
export function checkKeys(
  value: object,
  known: ReadonlySet<string>,
  path = "",
): void {
  for (const key of Object.keys(value)) {
    if (known.has(key)) continue;
    const name = path ? `${path}.${key}` : key;
    const near = suggest(key, known);
    const foreign = path === "" ? FOREIGN[key] : undefined;
    const hint = near !== undefined
      ? ` (did you mean ${path ? `${path}.${near}` : near}?)`
      : foreign !== undefined
      ? ` (smtpd's option is ${foreign})`
      : "";
    throw new TypeError(`Cannot use option ${name}: unknown option${hint}`);
  }
}
