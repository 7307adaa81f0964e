// The second user, driven over the client-server HTTP API from Node (no browser): accepting the invite
// and writing a message that the browser user must then see in the client's UI.
export function peer(hs, userId, token) {
  let txn = 0;
  async function call(method, path, body) {
    const res = await fetch(`${hs}/_matrix/client/v3${path}`, {
      method,
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = await res.json();
    if (!res.ok) throw new Error(`${userId} ${method} ${path}: ${res.status} ${JSON.stringify(answer)}`);
    return answer;
  }
  return {
    userId,
    call,
    async waitForInvite(roomId, timeoutMs = 15000) {
      const deadline = Date.now() + timeoutMs;
      let since = "";
      while (Date.now() < deadline) {
        const sync = await call("GET", `/sync?timeout=1000${since ? `&since=${encodeURIComponent(since)}` : ""}`);
        since = sync.next_batch;
        if (sync.rooms?.invite?.[roomId]) return;
      }
      throw new Error(`${userId} saw no invite to ${roomId}`);
    },
    join: (roomId) => call("POST", `/rooms/${encodeURIComponent(roomId)}/join`, {}),
    say: async (roomId, body) =>
      (await call("PUT", `/rooms/${encodeURIComponent(roomId)}/send/m.room.message/p${Date.now()}-${txn++}`, { msgtype: "m.text", body })).event_id,
  };
}
