// Screenshots that also record how long each step took (milliseconds since the previous one), so a slow step
// shows up in the test's output instead of only as a slow test.
import { shot } from "./lib.mjs";

export function steps() {
  const times = {};
  let last = Date.now();
  return {
    times,
    async done(page, name) {
      times[name] = Date.now() - last;
      await shot(page, name);
      last = Date.now();
    },
  };
}
