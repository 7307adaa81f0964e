// Bundles the two browser clients once, into .bundle/<hash>/ (gitignored), keyed by package-lock.json and the
// sources below, so a test run only pays for esbuild when something changed:
//   jssdk/     our own page around matrix-js-sdk (jssdk/page.js + jssdk/index.html)
//   hydrogen/  the whole Hydrogen app (RootViewModel + RootView from hydrogen-view-sdk) with its assets and olm
import { createHash } from "node:crypto";
import { cpSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const SOURCES = ["package-lock.json", "build.mjs", "jssdk/page.js", "jssdk/index.html", "hydrogen/app.js", "hydrogen/index.html"];

export function bundleHash() {
  const h = createHash("sha256");
  for (const f of SOURCES) h.update(f).update(readFileSync(join(here, f)));
  return h.digest("hex").slice(0, 16);
}

export async function ensureBundle() {
  const root = join(here, ".bundle");
  const out = join(root, bundleHash());
  if (existsSync(join(out, ".done"))) return out;
  const { build } = await import("esbuild");
  const tmp = `${out}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const common = { bundle: true, format: "esm", platform: "browser", target: "chrome120", logLevel: "error" };
  await build({ ...common, entryPoints: [join(here, "jssdk/page.js")], outfile: join(tmp, "jssdk/page.js") });
  cpSync(join(here, "jssdk/index.html"), join(tmp, "jssdk/index.html"));
  await build({
    ...common,
    entryPoints: [join(here, "hydrogen/app.js")],
    outfile: join(tmp, "hydrogen/app.js"),
    // olm.js probes for Node's modules; in the browser those branches never run
    external: ["fs", "path", "crypto"],
  });
  cpSync(join(here, "hydrogen/index.html"), join(tmp, "hydrogen/index.html"));
  cpSync(join(here, "node_modules/hydrogen-view-sdk/asset-build/assets"), join(tmp, "hydrogen/assets"), { recursive: true });
  for (const f of ["olm.js", "olm.wasm", "olm_legacy.js"]) {
    cpSync(join(here, "node_modules/@matrix-org/olm", f), join(tmp, "hydrogen/olm", f));
  }
  cpSync(join(here, "node_modules/hydrogen-view-sdk/lib-build/sw.js"), join(tmp, "hydrogen/sw.js"));
  mkdirSync(join(tmp), { recursive: true });
  cpSync(join(here, "build.mjs"), join(tmp, ".done"));
  if (existsSync(join(out, ".done"))) {
    rmSync(tmp, { recursive: true, force: true }); // another run finished first
  } else {
    rmSync(out, { recursive: true, force: true });
    renameSync(tmp, out);
  }
  // older bundles (another package-lock, older sources) are dead weight
  for (const d of readdirSync(root)) if (join(root, d) !== out && !d.includes(".tmp-")) rmSync(join(root, d), { recursive: true, force: true });
  return out;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) console.log(await ensureBundle());
