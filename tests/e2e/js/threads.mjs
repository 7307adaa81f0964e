// matrix-js-sdk (thread support on) against a running Ranvier: a thread, an edit, the relations API, the
// thread list, the root's bundled aggregations and a threaded read receipt.
// Usage: node threads.mjs <base url> <user a> <user b> <password>
// Prints one JSON line of results and exits 0, or prints the failure and exits 1.
import * as sdk from "matrix-js-sdk";
import { steps } from "./common.mjs";

const [baseUrl, userA, userB, password] = process.argv.slice(2);
const STEP_TIMEOUT_MS = 20000;
const { waitFor, loggedIn: login } = steps(STEP_TIMEOUT_MS);
const loggedIn = (user) =>
  login(baseUrl, user, password, { deviceName: "js-sdk threads", startOptions: { threadSupport: true } });

async function main() {
  const alice = await loggedIn(userA);
  const bob = await loggedIn(userB);
  const results = {};
  try {
    const invited = waitFor("bob's invite", bob, "RoomMember.membership", (event, member) =>
      member.userId === bob.getUserId() && member.membership === "invite" ? member.roomId : null,
    );
    const { room_id: roomId } = await alice.createRoom({ name: "threads", invite: [bob.getUserId()] });
    await invited;
    await bob.joinRoom(roomId);
    results.room_id = roomId;

    const root = await alice.sendTextMessage(roomId, "a thread root");
    results.root = root.event_id;
    // Bob replies in the thread (the SDK adds the m.thread relation and the reply fallback).
    const reply = await bob.sendMessage(roomId, root.event_id, { msgtype: "m.text", body: "in the thread" });
    results.reply = reply.event_id;
    // Alice edits her root.
    const edit = await alice.sendMessage(roomId, {
      msgtype: "m.text",
      body: "* a thread root, edited",
      "m.new_content": { msgtype: "m.text", body: "a thread root, edited" },
      "m.relates_to": { rel_type: "m.replace", event_id: root.event_id },
    });
    results.edit = edit.event_id;

    const related = await alice.relations(roomId, root.event_id, "m.thread");
    results.relations = related.events.map((e) => e.getId());
    const list = await alice.createThreadListMessagesRequest(
      roomId, null, 20, sdk.Direction.Backward, sdk.ThreadFilterType.All,
    );
    results.threads = list.chunk.map((e) => e.event_id);
    const mine = await bob.createThreadListMessagesRequest(
      roomId, null, 20, sdk.Direction.Backward, sdk.ThreadFilterType.My,
    );
    results.bob_participated = mine.chunk.map((e) => e.event_id);
    const raw = await alice.fetchRoomEvent(roomId, root.event_id);
    const bundle = raw.unsigned?.["m.relations"] ?? {};
    results.thread_count = bundle["m.thread"]?.count;
    results.thread_latest = bundle["m.thread"]?.latest_event?.event_id;
    results.replace = bundle["m.replace"]?.event_id;

    // Alice's read receipt on Bob's reply goes out threaded (thread_id = the root), and Bob sees it.
    const seen = waitFor("alice's threaded receipt at bob", bob, "Room.receipt", (event, room) => {
      if (room.roomId !== roomId) return null;
      const data = event.getContent()[reply.event_id]?.["m.read"]?.[alice.getUserId()];
      return data ? data : null;
    });
    const replyRaw = await alice.fetchRoomEvent(roomId, reply.event_id);
    await alice.sendReadReceipt(new sdk.MatrixEvent({ ...replyRaw, room_id: roomId }));
    results.receipt = await seen;
  } finally {
    alice.stopClient();
    bob.stopClient();
  }
  console.log(JSON.stringify(results));
}

main().then(
  () => process.exit(0),
  (err) => {
    console.error(err?.stack || String(err));
    process.exit(1);
  },
);
