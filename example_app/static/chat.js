// The example chat's client: one WebSocket on /ws/{room}, the wire protocol of wsplugin.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const RECONNECT = new Set([1001, 1006, 1011, 1012, 4008, 4029]);
  const CLOSE_TEXT = {
    1000: "closed", 1001: "server going away", 1006: "connection lost",
    1008: "refused by policy", 1009: "message too big", 1011: "server error",
    1012: "server restarting", 4000: "kicked", 4008: "too slow", 4029: "rate limited",
  };
  const state = { socket: null, room: "", name: "", myId: "", retries: 0, timer: 0 };

  function wsUrl(room, name) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/ws/" + encodeURIComponent(room) +
      "?name=" + encodeURIComponent(name);
  }

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

  function onFrame(event) {
    if (event.target !== state.socket) return;
    if (typeof event.data !== "string") return addLine("system", "", "(binary message)");
    const frame = JSON.parse(event.data);
    if (frame.type === "welcome") {
      state.myId = frame.connection_id;
      state.retries = 0;
      setStatus("online as " + state.name, "online");
      setJoined(true);
      refreshMembers();
    } else if (frame.type === "message") {
      onMessage(frame);
    } else if (frame.type === "error") {
      addLine("error", "", frame.code + ": " + frame.detail);
    }
  }

  function onClose(event) {
    if (event.target !== state.socket) return;  // a socket we left on purpose
    state.socket = null;
    setJoined(false);
    const what = CLOSE_TEXT[event.code] || "closed";
    const reason = event.reason ? " (" + event.reason + ")" : "";
    addLine("system", "", "Disconnected: " + what + reason + " [" + event.code + "]");
    if (state.room && RECONNECT.has(event.code)) {
      const delay = Math.min(10000, 500 * 2 ** state.retries++) * (0.5 + Math.random() / 2);
      setStatus("reconnecting", "error");
      state.timer = window.setTimeout(open, delay);
    } else {
      state.room = "";
      renderMembers([]);
      setJoined(false);
      setStatus("offline", event.code === 1000 ? "" : "error");
    }
  }

  function open() {
    const socket = new WebSocket(wsUrl(state.room, state.name));
    state.socket = socket;
    setStatus("connecting", "");
    socket.addEventListener("message", onFrame);
    socket.addEventListener("close", onClose);
  }

  function leave() {
    window.clearTimeout(state.timer);
    const socket = state.socket;
    state.socket = null;
    if (socket) socket.close(1000);
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
    state.retries = 0;
    open();
  }

  function send(event) {
    event.preventDefault();
    const text = $("text").value.trim();
    if (!text || !state.socket || state.socket.readyState !== WebSocket.OPEN) return;
    state.socket.send(JSON.stringify({ type: "publish", data: { text: text } }));
    $("text").value = "";
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
})();
