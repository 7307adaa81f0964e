// A small Matrix client page of our own on matrix-js-sdk: log in, create a room, invite, send, reply in a
// thread, react and edit. The SDK does all the talking to the homeserver (login, /sync, sends); this page
// only renders the live timeline: edits applied, reactions counted, thread replies indented under their root.
import { ClientEvent, RoomEvent, createClient } from "matrix-js-sdk";

const $ = (id) => document.getElementById(id);
let client = null;
let roomId = null;
let selected = null;

function fail(err) {
  $("error").textContent = String(err && err.message ? err.message : err);
}

function act(id, fn) {
  $(id).addEventListener("click", () => fn().catch(fail));
}

act("login", async () => {
  const baseUrl = $("hs").value;
  const login = await createClient({ baseUrl }).loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: $("user").value },
    password: $("password").value,
  });
  client = createClient({ baseUrl, userId: login.user_id, accessToken: login.access_token, deviceId: login.device_id });
  $("status").textContent = `logged in as ${login.user_id}`;
  client.on(ClientEvent.Sync, (state) => {
    if (state === "PREPARED") $("status").textContent = `logged in as ${login.user_id}, synced`;
  });
  client.on(RoomEvent.Timeline, (event, room) => {
    if (room && room.roomId === roomId) render();
  });
  client.on(ClientEvent.Room, (room) => {
    if (room.roomId === roomId) render();
  });
  client.on(RoomEvent.LocalEchoUpdated, (_e, room) => {
    if (room && room.roomId === roomId) render();
  });
  await client.startClient({ initialSyncLimit: 20 });
});

act("create-room", async () => {
  const answer = await client.createRoom({ name: $("room-name").value, preset: "private_chat" });
  roomId = answer.room_id;
  $("room-id").textContent = roomId;
  render();
});

act("invite", async () => {
  await client.invite(roomId, $("invitee").value);
});

function sent(answer) {
  $("last-sent").textContent = answer.event_id;
}

act("send", async () => {
  sent(await client.sendMessage(roomId, { msgtype: "m.text", body: $("message").value }));
});

act("thread-reply", async () => {
  const content = {
    msgtype: "m.text",
    body: $("thread-text").value,
    "m.relates_to": { rel_type: "m.thread", event_id: selected, is_falling_back: true, "m.in_reply_to": { event_id: selected } },
  };
  sent(await client.sendEvent(roomId, selected, "m.room.message", content));
});

act("react", async () => {
  sent(await client.sendEvent(roomId, "m.reaction", { "m.relates_to": { rel_type: "m.annotation", event_id: selected, key: "👍" } }));
});

act("edit", async () => {
  const text = $("edit-text").value;
  sent(
    await client.sendMessage(roomId, {
      msgtype: "m.text",
      body: `* ${text}`,
      "m.new_content": { msgtype: "m.text", body: text },
      "m.relates_to": { rel_type: "m.replace", event_id: selected },
    }),
  );
});

function render() {
  const room = client.getRoom(roomId);
  if (!room) return;
  const events = room.getLiveTimeline().getEvents();
  const edits = new Map();
  const reactions = new Map();
  const threads = new Map();
  for (const e of events) {
    const rel = e.getWireContent()["m.relates_to"];
    if (!rel || !rel.event_id) continue;
    if (rel.rel_type === "m.replace" && e.getWireContent()["m.new_content"]) edits.set(rel.event_id, e.getWireContent()["m.new_content"].body);
    if (rel.rel_type === "m.annotation") reactions.set(rel.event_id, [...(reactions.get(rel.event_id) ?? []), `${rel.key} ${e.getSender()}`]);
    if (rel.rel_type === "m.thread") threads.set(rel.event_id, [...(threads.get(rel.event_id) ?? []), e]);
  }
  const ul = $("timeline");
  ul.replaceChildren();
  for (const e of events) {
    const rel = e.getWireContent()["m.relates_to"];
    if (rel && ["m.replace", "m.annotation", "m.thread"].includes(rel.rel_type)) continue;
    const li = document.createElement("li");
    li.dataset.eventId = e.getId();
    if (e.getId() === selected) li.className = "selected";
    if (e.getType() === "m.room.member") {
      li.innerHTML = `<span class="member"></span>`;
      li.firstChild.textContent = `${e.getStateKey()} ${e.getContent().membership}`;
    } else if (e.getType() === "m.room.message") {
      const body = edits.get(e.getId()) ?? e.getWireContent().body;
      li.textContent = `${e.getSender()}: ${body}${edits.has(e.getId()) ? " (edited)" : ""}`;
      if (reactions.has(e.getId())) {
        const r = document.createElement("span");
        r.className = "reactions";
        r.textContent = reactions.get(e.getId()).join(", ");
        li.append(r);
      }
      for (const t of threads.get(e.getId()) ?? []) {
        const d = document.createElement("div");
        d.className = "thread";
        d.dataset.eventId = t.getId();
        d.textContent = `↳ thread: ${t.getSender()}: ${t.getWireContent().body}`;
        li.append(d);
      }
      li.addEventListener("click", () => {
        selected = e.getId();
        $("selected").textContent = selected;
        render();
      });
    } else {
      continue;
    }
    ul.append(li);
  }
}
