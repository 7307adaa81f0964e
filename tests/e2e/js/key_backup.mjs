// Server-side key backup with matrix-js-sdk's Rust crypto: Bob sends Alice an encrypted message; Alice's
// first device backs up its room keys (POST /room_keys/version, PUT /room_keys/keys); a new device of
// Alice, which never received the room key, restores it from the backup and decrypts the message.
// Usage: node key_backup.mjs <base url> <user a> <user b> <password>
// Prints one JSON line of results and exits 0, or prints the failure and exits 1.
import * as sdk from "matrix-js-sdk";

const [baseUrl, userA, userB, password] = process.argv.slice(2);
const STEP_TIMEOUT_MS = 60000;
sdk.logger?.setLevel?.("warn");

function waitFor(what, emitter, event, check) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), STEP_TIMEOUT_MS);
    const listener = (...args) => {
      const value = check(...args);
      if (value) {
        clearTimeout(timer);
        emitter.removeListener(event, listener);
        resolve(value);
      }
    };
    emitter.on(event, listener);
  });
}

async function loggedIn(user) {
  const anon = sdk.createClient({ baseUrl });
  const login = await anon.login("m.login.password", {
    identifier: { type: "m.id.user", user },
    password,
    initial_device_display_name: "js-sdk key backup",
  });
  const client = sdk.createClient({
    baseUrl,
    accessToken: login.access_token,
    userId: login.user_id,
    deviceId: login.device_id,
  });
  await client.initRustCrypto({ useIndexedDB: false });
  const prepared = waitFor("initial sync", client, "sync", (state) => state === "PREPARED");
  await client.startClient({ initialSyncLimit: 20 });
  await prepared;
  return client;
}

function decryptedText(client, roomId, body) {
  return waitFor(`"${body}" decrypted at ${client.getDeviceId()}`, client, sdk.MatrixEventEvent.Decrypted, (event) =>
    event.getRoomId() === roomId && !event.isDecryptionFailure() && event.getContent().body === body ? event : null,
  );
}

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
