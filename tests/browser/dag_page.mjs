// The room-DAG page in headless Chromium (tests/admin_dag/test_dag_page.py): loads the page with an admin
// token, waits for the graph, and reports what it drew; a screenshot per step.
import { launch, shot } from "./lib.mjs";

const args = JSON.parse(process.env.ARGS);
const browser = await launch();
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1400 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  // Without a token the page asks for one.
  await page.goto(args.url);
  await page.waitForSelector("#token-form:not([hidden])");
  await shot(page, "asks-for-token");
  await page.fill("#token", args.token);
  await page.click("#token-form button[type=submit]");
  await page.waitForSelector("body[data-loaded=true]", { timeout: 30000 });
  await shot(page, "dag");
  const drawn = await page.evaluate(({ dummy }) => {
    const cy = window.dagGraph;
    const node = cy.$id(dummy);
    node.emit("tap");
    return {
      summary: { ...document.getElementById("summary").dataset },
      nodes: cy.nodes().length,
      missing: cy.nodes(".missing").map((n) => n.id()),
      dummies: cy.nodes(".dummy").map((n) => n.id()),
      dummy_incoming: node.incomers("edge").map((e) => e.source().id()),
      forward: cy.nodes(".fext").map((n) => n.id()),
      details: document.getElementById("details").textContent,
      // dagre placed every prev event above the event citing it (oldest at the top)
      layered: cy.edges().every((e) => e.source().position("y") < e.target().position("y")),
    };
  }, { dummy: args.dummy });
  await shot(page, "dummy-selected");
  // The room check from the page: the remote server of this room lacks our dummy event.
  await page.click("#check");
  await page.waitForFunction(() => !document.getElementById("check-report").textContent.startsWith("check"));
  drawn.check = await page.textContent("#check-report");
  await shot(page, "room-check");
  // Paging: the window around the oldest event shown.
  await page.click("#older");
  await page.waitForFunction(() => document.getElementById("around").value !== "");
  await page.waitForSelector("body[data-loaded=true]");
  await shot(page, "older");
  console.log(JSON.stringify({ ...drawn, errors }));
} finally {
  await browser.close();
}
