// Server-side key backup with matrix-js-sdk's Rust crypto: Bob sends Alice an encrypted message; Alice's
// first device backs up its room keys (POST /room_keys/version, PUT /room_keys/keys); a new device of
// Alice, which never received the room key, restores it from the backup and decrypts the message.
// Usage: node key_backup.mjs <base url> <user a> <user b> <password>
// Prints one JSON line of results and exits 0, or prints the failure and exits 1.
import { steps } from "./common.mjs";

const [baseUrl, userA, userB, password] = process.argv.slice(2);
const STEP_TIMEOUT_MS = 60000;
const { waitFor, loggedIn: login, decryptedText } = steps(STEP_TIMEOUT_MS);
const loggedIn = (user) =>
  login(baseUrl, user, password, {
    deviceName: "js-sdk key backup",
    rustCrypto: true,
    startOptions: { initialSyncLimit: 20 },
  });

async function backupCount(client) {
  const response = await fetch(`${baseUrl}/_matrix/client/v3/room_keys/version`, {
    headers: { Authorization: `Bearer ${client.getAccessToken()}` },
  });
  return response.status === 200 ? (await response.json()).count : 0;
}

async function main() {
  const alice = await loggedIn(userA);
  const bob = await loggedIn(userB);
  const clients = [alice, bob];
  const results = {};
  try {
    const invited = waitFor("bob's invite", bob, "RoomMember.membership", (event, member) =>
      member.userId === bob.getUserId() && member.membership === "invite" ? member.roomId : null,
    );
    const { room_id: roomId } = await alice.createRoom({
      name: "backed up",
      invite: [bob.getUserId()],
      initial_state: [{ type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } }],
    });
    await invited;
    const joined = waitFor("bob's join at alice", alice, "RoomMember.membership", (event, member) =>
      member.roomId === roomId && member.userId === bob.getUserId() && member.membership === "join" ? true : null,
    );
    await bob.joinRoom(roomId);
    await joined;
    // Bob's client must have seen the room's m.room.encryption (through its /sync) before it can send.
    const configured = Date.now() + STEP_TIMEOUT_MS;
    while (!(await bob.getCrypto().isEncryptionEnabledInRoom(roomId))) {
      if (Date.now() > configured) throw new Error("bob's client never saw the room as encrypted");
      await new Promise((r) => setTimeout(r, 100));
    }

    const body = "a secret worth backing up";
    const atAlice = decryptedText(alice, roomId, body);
    const sent = await bob.sendTextMessage(roomId, body);
    await atAlice;

    // Alice's first device creates a backup version and uploads the room key it holds.
    await alice.getCrypto().resetKeyBackup();
    const deadline = Date.now() + STEP_TIMEOUT_MS;
    while ((await backupCount(alice)) < 1) {
      if (Date.now() > deadline) throw new Error("the room key never reached the backup");
      await new Promise((r) => setTimeout(r, 200));
    }
    results.backup_count = await backupCount(alice);
    const version = await alice.getCrypto().getActiveSessionBackupVersion();
    const privateKey = await alice.getCrypto().getSessionBackupPrivateKey();
    results.version = version;

    // A new device of Alice: the message is undecryptable until the key comes from the backup.
    const second = await loggedIn(userA);
    clients.push(second);
    const room = second.getRoom(roomId);
    const event = room?.getLiveTimeline().getEvents().find((e) => e.getId() === sent.event_id);
    if (!event) throw new Error("the new device did not get the event in its initial sync");
    await second.decryptEventIfNeeded(event);
    results.undecryptable_before_restore = event.isDecryptionFailure();
    await second.getCrypto().storeSessionBackupPrivateKey(privateKey, version);
    const restored = await second.getCrypto().restoreKeyBackup();
    results.imported = restored.imported;
    await second.decryptEventIfNeeded(event, { isRetry: true });
    results.decrypted_after_restore = event.isDecryptionFailure() ? null : event.getContent().body;
  } finally {
    for (const client of clients) client.stopClient();
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
