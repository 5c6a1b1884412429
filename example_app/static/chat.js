// The example chat's page script: wsplugin's own browser client (served by the plugin at
// /ws-client.js) does the connecting, reconnecting and rejoining; this file is the UI.
import { WSClient } from "/ws-client.js";

const $ = (id) => document.getElementById(id);
const CLOSE_TEXT = {
  1000: "closed", 1001: "server going away", 1006: "connection lost",
  1008: "refused by policy", 1009: "message too big", 1011: "server error",
  1012: "server restarting", 4000: "kicked", 4008: "too slow", 4029: "rate limited",
};
const state = { client: null, room: "", name: "", myId: "" };

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

async function refreshMembers() {
  if (!state.room) return renderMembers([]);
  try {
    const response = await fetch("/api/rooms/" + encodeURIComponent(state.room) + "/members");
    if (response.ok) renderMembers(await response.json());
  } catch (err) {
    // offline: the next presence message or reconnect refreshes the list
  }
}

function renderMembers(members) {
  const list = $("members");
  list.replaceChildren();
  for (const member of members) {
    const li = document.createElement("li");
    li.textContent = member.identity === null ? "?" : String(member.identity);
    if (member.id === state.myId) {
      li.className = "me";
      li.textContent += " (you)";
    }
    list.appendChild(li);
  }
  $("member-count").textContent = String(members.length);
}

function onMessage(frame) {
  const data = frame.data;
  if (data && data.kind === "presence") {
    addLine("system", "", data.name + (data.event === "joined" ? " joined" : " left"));
    refreshMembers();
  } else if (data && data.kind === "announce") {
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
  client.on("connected", (event) => {
    state.myId = event.connectionId;
    setStatus("online as " + state.name, "online");
    setJoined(true);
    refreshMembers();
  });
  client.on("message", onMessage);
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
    renderMembers([]);
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
  renderMembers([]);
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
