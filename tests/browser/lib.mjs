// Shared by the browser tests: Debian's Chromium driven by playwright-core, a screenshot per step.
// The Python side (harness.py) passes CHROMIUM (the executable) and ARTIFACT_DIR (where screenshots go).
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

export async function launch() {
  const executablePath = process.env.CHROMIUM;
  if (!executablePath) throw new Error("CHROMIUM is not set (run through tests/browser/harness.py)");
  // --no-sandbox: CI runs as root, where Chromium refuses its sandbox.
  return chromium.launch({ executablePath, headless: true, args: ["--no-sandbox", "--disable-gpu"] });
}

let step = 0;
export async function shot(page, name) {
  const dir = process.env.ARTIFACT_DIR;
  if (!dir) return;
  mkdirSync(dir, { recursive: true });
  step += 1;
  await page.screenshot({ path: join(dir, `${String(step).padStart(2, "0")}-${name}.png`), fullPage: true });
}
