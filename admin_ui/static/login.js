// wsplugin admin login: a link ending in #token=... logs in without the token ever being
// part of a request URL (a fragment is not sent to the server, so no access log has it).
// The token is removed from the address bar and history, then POSTed with the token form.
"use strict";

(function () {
  const match = /^#token=(.+)$/.exec(window.location.hash);
  if (!match) return;
  history.replaceState(null, "", window.location.pathname + window.location.search);
  const form = document.getElementById("token-form");
  if (!form) return;
  let token = match[1];
  try { token = decodeURIComponent(token); } catch (e) { /* keep it as it is */ }
  form.elements.namedItem("token").value = token;
  form.submit();
})();
