// Drives our matrix-js-sdk page (jssdk/page.js) in headless Chromium: log in, create a room, invite the
// second user (who joins and writes over HTTP, see peer.mjs), send, reply in a thread, react, edit; a
// screenshot per step. Prints the event ids as the last JSON line for the Python side to check.
import { ensureBundle } from "../build.mjs";
import { launch, shot } from "../lib.mjs";
import { steps } from "../steps.mjs";
import { peer } from "../peer.mjs";
import { serve } from "../serve.mjs";

const args = JSON.parse(process.env.ARGS);
const bundle = await ensureBundle();
const site = await serve(bundle);
const browser = await launch();
const errors = [];
const step = steps();
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 900 } });
  // the homeserver's error answers, kept for the report (clients probe optional endpoints and expect 404s)
  const httpErrors = [];
  page.on("response", (r) => {
    if (r.status() >= 400 && r.url().startsWith(args.hs)) httpErrors.push(`${r.status()} ${r.request().method()} ${new URL(r.url()).pathname}`);
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  page.on("console", (m) => m.type() === "error" && console.error("console:", m.text().slice(0, 400)));
  const text = (sel) => page.locator(sel).textContent();
  const sent = async (before) => {
    await page.waitForFunction((b) => {
      const t = document.getElementById("last-sent").textContent;
      return t.startsWith("$") && t !== b;
    }, before);
    return text("#last-sent");
  };
  const li = (fragment) => page.locator("#timeline > li", { hasText: fragment });
  const bob = peer(args.hs, args.bob.user_id, args.bob.token);

  await page.goto(`${site.url}/jssdk/index.html`);
  await page.fill("#hs", args.hs);
  await page.fill("#user", args.user);
  await page.fill("#password", args.password);
  await step.done(page, "login-form");
  await page.click("#login");
  await page.locator("#status", { hasText: "synced" }).waitFor();
  await step.done(page, "logged-in");

  await page.fill("#room-name", args.room_name);
  await page.click("#create-room");
  await page.waitForFunction(() => document.getElementById("room-id").textContent.startsWith("!"));
  const roomId = await text("#room-id");
  await li(`${args.user_id} join`).waitFor();
  await step.done(page, "room-created");

  await page.fill("#invitee", bob.userId);
  await page.click("#invite");
  await li(`${bob.userId} invite`).waitFor();
  await step.done(page, "invited");
  await bob.waitForInvite(roomId);
  await bob.join(roomId);
  await li(`${bob.userId} join`).waitFor();
  await step.done(page, "second-user-joined");

  await page.fill("#message", "hello from the browser");
  await page.click("#send");
  const mine = await sent("");
  await li(`${args.user_id}: hello from the browser`).waitFor();
  await step.done(page, "message-sent");

  const bobs = await bob.say(roomId, "hello from the second user");
  await li(`${bob.userId}: hello from the second user`).waitFor();
  await step.done(page, "second-user-message-seen");

  await li(`${bob.userId}: hello from the second user`).click();
  await page.fill("#thread-text", "a reply in the thread");
  await page.click("#thread-reply");
  const thread = await sent(mine);
  await page.locator(".thread", { hasText: "a reply in the thread" }).waitFor();
  await step.done(page, "thread-reply");

  await page.click("#react");
  const reaction = await sent(thread);
  await li(`${bob.userId}: hello from the second user`).locator(".reactions", { hasText: "👍" }).waitFor();
  await step.done(page, "reaction");

  await li(`${args.user_id}: hello from the browser`).click();
  await page.fill("#edit-text", "hello from the browser, edited");
  await page.click("#edit");
  const edit = await sent(reaction);
  await li("hello from the browser, edited (edited)").waitFor();
  await step.done(page, "edited");

  const error = await text("#error");
  console.log(JSON.stringify({ room_id: roomId, mine, bobs, thread, reaction, edit, error, errors, step_ms: step.times, http_errors: httpErrors }));
} catch (e) {
  for (const p of browser.contexts().flatMap((c) => c.pages())) await shot(p, "failure").catch(() => {});
  console.error("page errors:", errors);
  throw e;
} finally {
  await browser.close();
  site.close();
}
