// The example chat's page script: wsplugin's own browser client (served by the plugin at
// /ws-client.js) does the connecting, reconnecting and rejoining; this file is the UI.
import { WSClient } from "/ws-client.js";

const $ = (id) => document.getElementById(id);
const CLOSE_TEXT = {
  1000: "closed", 1001: "server going away", 1006: "connection lost",
  1008: "refused by policy", 1009: "message too big", 1011: "server error",
  1012: "server restarting", 4000: "kicked", 4008: "too slow", 4029: "rate limited",
};
const state = { client: null, room: "", name: "", refresh: 0 };
const REFRESH_AFTER_JOIN_MS = 1000;

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = "status " + (kind || "");
}

function addLine(kind, name, text) {
  const li = document.createElement("li");
  li.className = kind;
  if (name) {
    const who = document.createElement("span");
    who.className = "name";
    who.textContent = name;
    li.appendChild(who);
  }
  li.appendChild(document.createTextNode(text));
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  list.appendChild(li);
  while (list.children.length > 500) list.removeChild(list.firstChild);
  if (atBottom) list.scrollTop = list.scrollHeight;
}

function setJoined(joined) {
  $("text").disabled = !joined;
  $("send").disabled = !joined;
  $("leave").disabled = !state.room;
}

const nameOf = (user, info) => (info && info.name) || user;

function devices(connections) {
  if (connections === undefined) return "";  // joined since the last snapshot: not known yet
  if (connections === 0) return "reconnecting";  // missing since our reconnect, for a while
  return connections === 1 ? "1 device" : connections + " devices";
}

// The member list is the client's synced presence: one entry per user (name), with their
// connections (tabs, devices) as of the last snapshot. `users` null: too many to list.
function renderMembers(presence) {
  const users = (presence && presence.users) || {};
  const list = $("members");
  list.replaceChildren();
  const mine = (user) => (user === state.name ? 0 : 1);
  const order = Object.keys(users).sort((a, b) => mine(a) - mine(b) || a.localeCompare(b));
  for (const user of order) {
    const li = document.createElement("li");
    li.textContent = nameOf(user, users[user].info) + (user === state.name ? " (you)" : "");
    if (user === state.name) li.className = "me";
    const count = devices(users[user].connections);
    if (count) {
      const span = document.createElement("span");
      span.className = "devices";
      span.textContent = " · " + count;
      li.appendChild(span);
    }
    list.appendChild(li);
  }
  const total = presence && presence.users === null ? presence.count.users : order.length;
  $("member-count").textContent = String(total);
}

// Device counts come with snapshots only: ask for a fresh one once a burst of joins is over.
function refreshSoon(client) {
  clearTimeout(state.refresh);
  state.refresh = setTimeout(() => {
    if (client === state.client) client.refreshPresence(state.room).catch(() => {});
  }, REFRESH_AFTER_JOIN_MS);
}

function onMessage(frame) {
  const data = frame.data;
  if (data && data.kind === "announce") {
    addLine("announce", "server", data.text !== undefined ? data.text : JSON.stringify(data.data));
  } else if (data && data.kind === "chat") {
    addLine("chat", data.name, data.text);
  } else {
    addLine("chat", frame.sender ? "?" : "server", JSON.stringify(data));
  }
}

function connect() {
  const client = new WSClient("/ws/" + encodeURIComponent(state.room), {
    params: { name: state.name },
  });
  state.client = client;
  setStatus("connecting", "");
  client.on("connected", () => {
    setStatus("online as " + state.name, "online");
    setJoined(true);
  });
  client.on("message", onMessage);
  client.on("presence", renderMembers);
  client.on("join", (event) => {
    addLine("system", "", nameOf(event.user, event.info) + " joined");
    refreshSoon(client);
  });
  client.on("leave", (event) => addLine("system", "", nameOf(event.user, event.info) + " left"));
  client.on("error", (event) => addLine("error", "", event.code + ": " + event.detail));
  client.on("reset", () => addLine("system", "", "Some messages were missed while offline"));
  client.on("disconnected", (event) => {
    setJoined(false);
    if (event.wasConnected) addLine("system", "", "Disconnected: " + closeText(event));
    if (event.reconnect) {
      setStatus("reconnecting in " + (event.delay / 1000).toFixed(1) + " s", "error");
    }
  });
  client.on("closed", (event) => {
    if (state.client !== client) return;  // a client we closed on purpose
    if (event.code === 1008) addLine("system", "", "Refused: " + closeText(event));
    state.client = null;
    state.room = "";
    renderMembers(null);
    setJoined(false);
    setStatus("offline", event.code === 1000 ? "" : "error");
  });
}

function closeText(event) {
  const what = CLOSE_TEXT[event.code] || "closed";
  return what + (event.reason ? " (" + event.reason + ")" : "") + " [" + event.code + "]";
}

function leave() {
  const client = state.client;
  state.client = null;
  if (client) client.close();
  if (state.room) addLine("system", "", "You left " + state.room);
  state.room = "";
  $("room-title").textContent = "Not in a room";
  renderMembers(null);
  setJoined(false);
}

function join(event) {
  event.preventDefault();
  leave();
  state.name = $("name").value.trim() || "anonymous";
  state.room = $("room").value.trim();
  localStorage.setItem("wsplugin-chat", JSON.stringify({ name: state.name, room: state.room }));
  $("room-title").textContent = "Room " + state.room;
  $("messages").replaceChildren();
  connect();
}

function send(event) {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text || !state.client) return;
  $("text").value = "";
  // Resolved by the server's ack; a rejection says whether it was delivered.
  state.client.publish(state.room, { text: text }).catch((err) => {
    const fate = err.fate === "unknown" ? "may not have been sent" : "was not sent";
    addLine("error", "", "Your message " + fate + " (" + err.code + ": " + err.detail + ")");
  });
}

function restore() {
  try {
    const saved = JSON.parse(localStorage.getItem("wsplugin-chat") || "{}");
    if (saved.name) $("name").value = saved.name;
    if (saved.room) $("room").value = saved.room;
  } catch (err) {
    localStorage.removeItem("wsplugin-chat");
  }
}

restore();
$("join-form").addEventListener("submit", join);
$("leave").addEventListener("click", leave);
$("send-form").addEventListener("submit", send);
