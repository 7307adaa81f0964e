// What every matrix-js-sdk script here needs: waiting for an SDK event under a deadline, a logged-in client
// after its first sync, and waiting for a message to be decrypted. Each script picks its step timeout.
import * as sdk from "matrix-js-sdk";

// The SDK logs a lot at info level; keep the output to what the tests read.
sdk.logger?.setLevel?.("warn");

export function steps(timeoutMs) {
  function waitFor(what, emitter, event, check) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), timeoutMs);
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

  // A password login, then a started client once its initial sync is PREPARED; with `rustCrypto` the
  // Rust crypto stack (initRustCrypto, as Element Web) is set up before the first sync.
  async function loggedIn(baseUrl, user, password, { deviceName, rustCrypto = false, startOptions = {} } = {}) {
    const anon = sdk.createClient({ baseUrl });
    const login = await anon.login("m.login.password", {
      identifier: { type: "m.id.user", user },
      password,
      initial_device_display_name: deviceName,
    });
    const client = sdk.createClient({
      baseUrl,
      accessToken: login.access_token,
      userId: login.user_id,
      deviceId: login.device_id,
    });
    if (rustCrypto) {
      await client.initRustCrypto({ useIndexedDB: false });
    }
    const prepared = waitFor("initial sync", client, "sync", (state) => state === "PREPARED");
    await client.startClient({ initialSyncLimit: 10, ...startOptions });
    await prepared;
    return client;
  }

  function decryptedText(client, roomId, body) {
    const where = `${client.getUserId()}/${client.getDeviceId()}`;
    return waitFor(`"${body}" decrypted at ${where}`, client, sdk.MatrixEventEvent.Decrypted, (event) =>
      event.getRoomId() === roomId &&
      !event.isDecryptionFailure() &&
      event.getType() === "m.room.message" &&
      event.getContent().body === body
        ? event
        : null,
    );
  }

  return { waitFor, loggedIn, decryptedText };
}
