// matrix-js-sdk with its Rust crypto (initRustCrypto, the stack Element Web uses): two users, possibly on
// two servers, exchange Megolm-encrypted messages in a room created encrypted, each decrypting the other's.
// Usage: node e2ee.mjs <base url A> <user A> <base url B> <user B> <password>
// Prints one JSON line of results and exits 0, or prints the failure and exits 1.
import { steps } from "./common.mjs";

const [baseUrlA, userA, baseUrlB, userB, password] = process.argv.slice(2);
const STEP_TIMEOUT_MS = 60000;
const { waitFor, loggedIn: login, decryptedText } = steps(STEP_TIMEOUT_MS);
const loggedIn = (baseUrl, user) =>
  login(baseUrl, user, password, { deviceName: "js-sdk rust crypto", rustCrypto: true });

async function main() {
  const alice = await loggedIn(baseUrlA, userA);
  const bob = await loggedIn(baseUrlB, userB);
  const results = { alice: alice.getUserId(), bob: bob.getUserId(), timings_ms: [] };
  try {
    const invited = waitFor("bob's invite", bob, "RoomMember.membership", (event, member) =>
      member.userId === bob.getUserId() && member.membership === "invite" ? member.roomId : null,
    );
    const { room_id: roomId } = await alice.createRoom({
      name: "rust crypto room",
      invite: [bob.getUserId()],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    results.room_id = roomId;
    await invited;
    const bobJoinedAtAlice = waitFor("bob's join at alice", alice, "RoomMember.membership", (event, member) =>
      member.roomId === roomId && member.userId === bob.getUserId() && member.membership === "join" ? true : null,
    );
    await bob.joinRoom(roomId);
    await bobJoinedAtAlice;
    results.encrypted_alice = await alice.getCrypto().isEncryptionEnabledInRoom(roomId);

    for (const [sender, receiver] of [
      [alice, bob],
      [bob, alice],
    ]) {
      const body = `hello from ${sender.getUserId()}`;
      const received = decryptedText(receiver, roomId, body);
      const start = Date.now();
      const sent = await sender.sendTextMessage(roomId, body);
      const event = await received;
      results.timings_ms.push(Date.now() - start);
      if (event.getId() !== sent.event_id) throw new Error("decrypted another event");
      if (event.getWireType() !== "m.room.encrypted") throw new Error("the message was not sent encrypted");
      results[`${receiver === bob ? "bob" : "alice"}_decrypted`] = event.getContent().body;
    }
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
