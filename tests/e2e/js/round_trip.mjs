// matrix-js-sdk against a running Ranvier: two clients log in, sync, and talk in a room.
// Usage: node round_trip.mjs <base url> <user a> <user b> <password>
// Prints one JSON line of results and exits 0, or prints the failure and exits 1.
import { steps } from "./common.mjs";

const [baseUrl, userA, userB, password] = process.argv.slice(2);
const STEP_TIMEOUT_MS = 20000;
const { waitFor, loggedIn: login } = steps(STEP_TIMEOUT_MS);
const loggedIn = (user) => login(baseUrl, user, password, { deviceName: "js-sdk e2e" });

async function main() {
  const alice = await loggedIn(userA);
  const bob = await loggedIn(userB);
  const results = { alice: alice.getUserId(), bob: bob.getUserId() };
  try {
    const capabilities = await alice.getCapabilities();
    results.default_room_version = capabilities["m.room_versions"]?.default;

    const invited = waitFor("bob's invite", bob, "RoomMember.membership", (event, member) =>
      member.userId === bob.getUserId() && member.membership === "invite" ? member.roomId : null,
    );
    const { room_id: roomId } = await alice.createRoom({ name: "js room", invite: [bob.getUserId()] });
    results.room_id = roomId;
    results.invite_seen = (await invited) === roomId;
    await bob.joinRoom(roomId);

    // Alice sends; Bob receives the message through his /sync.
    const received = waitFor("the message at bob", bob, "Room.timeline", (event, room) =>
      room?.roomId === roomId && event.getType() === "m.room.message" ? event : null,
    );
    const sent = await alice.sendTextMessage(roomId, "hello from matrix-js-sdk");
    const message = await received;
    results.event_id = sent.event_id;
    results.received_body = message.getContent().body;
    results.received_event_id = message.getId();

    // Bob's read receipt and typing reach Alice through her /sync.
    const receipt = waitFor("bob's receipt at alice", alice, "Room.receipt", (event, room) => {
      if (room.roomId !== roomId) return null;
      const content = event.getContent()[sent.event_id];
      return content?.["m.read"]?.[bob.getUserId()] ? true : null;
    });
    await bob.sendReadReceipt(message);
    results.receipt_seen = await receipt;

    const typing = waitFor("bob typing at alice", alice, "RoomMember.typing", (event, member) =>
      member.userId === bob.getUserId() && member.typing ? true : null,
    );
    await bob.sendTyping(roomId, true, 10000);
    results.typing_seen = await typing;

    // Global account data written by Alice comes back in her own /sync.
    const accountData = waitFor("account data", alice, "accountData", (event) =>
      event.getType() === "org.ranvier.test" ? event.getContent() : null,
    );
    await alice.setAccountData("org.ranvier.test", { colour: "teal" });
    results.account_data = await accountData;
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
