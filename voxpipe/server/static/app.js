// voxpipe browser client: microphone -> WebRTC -> bot, bot audio back, live transcript.
// The server speaks JSON events on the "events" data channel (see voxpipe/transports/webrtc.py).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const button = $("call");
  const statusLine = $("status");
  const log = $("log");

  // Everything a test (or a curious developer) may want to read, in one place.
  const state = {
    status: "idle", // idle | connecting | connected | closed | failed
    error: null,
    callId: null,
    connectionState: "new",
    channelOpen: false,
    messages: [], // every event received from the server, in order
    userSpeaking: false,
    botSpeaking: false,
    micPeak: 0, // highest RMS level (0..1) seen on the microphone
    remotePeak: 0, // highest RMS level (0..1) seen on the bot's audio
    remoteLevel: 0,
  };

  // With WEBRTC=token the server wants a bearer token: the operator's site links to the page
  // as /#token=<WEBRTC_TOKEN or a short-lived JWT>; a fragment never reaches server logs.
  const token = new URLSearchParams(location.hash.slice(1)).get("token");
  const authHeaders = () => (token ? { authorization: "Bearer " + token } : {});

  let pc = null;
  let micStream = null;
  let audioCtx = null;
  let meterTimer = null;
  let userBubble = null; // the user's turn being transcribed
  let botBubble = null; // the bot's reply being heard

  function setStatus(status, text) {
    state.status = status;
    statusLine.textContent = text;
    button.textContent = status === "connecting" || status === "connected" ? "Hang up" : "Start call";
    button.classList.toggle("live", status === "connected");
  }

  function bubble(kind, text) {
    const li = document.createElement("li");
    li.className = kind;
    li.textContent = text;
    log.appendChild(li);
    li.scrollIntoView({ block: "end" });
    return li;
  }

  // ------------------------------------------------------------------ server events

  function onEvent(msg) {
    state.messages.push(msg);
    switch (msg.type) {
      case "user-transcript":
        if (!userBubble) userBubble = bubble("user interim", "");
        userBubble.textContent = msg.text;
        userBubble.classList.toggle("interim", !msg.final);
        if (msg.final) userBubble = null;
        botBubble = null;
        break;
      case "bot-text":
        if (!botBubble) botBubble = bubble("bot", "");
        botBubble.textContent = (botBubble.textContent + " " + msg.text).trim();
        break;
      case "user-started-speaking":
        state.userSpeaking = true;
        showTurn();
        break;
      case "user-stopped-speaking":
        state.userSpeaking = false;
        showTurn();
        break;
      case "bot-started-speaking":
        state.botSpeaking = true;
        showTurn();
        break;
      case "bot-stopped-speaking":
        state.botSpeaking = false;
        botBubble = null;
        showTurn();
        break;
      case "call-ended":
        bubble("event", "call ended" + (msg.reason ? ": " + msg.reason : ""));
        hangUp("closed", "Call ended.");
        break;
      default:
        bubble("event", JSON.stringify(msg));
    }
  }

  function showTurn() {
    if (state.status !== "connected") return;
    if (state.userSpeaking && state.botSpeaking) statusLine.textContent = "You are talking over the bot…";
    else if (state.userSpeaking) statusLine.textContent = "Listening…";
    else if (state.botSpeaking) statusLine.textContent = "The bot is speaking.";
    else statusLine.textContent = "Connected: speak now.";
  }

  // ------------------------------------------------------------------ levels

  function rmsMeter(stream) {
    const source = audioCtx.createMediaStreamSource(stream);
    const analyser = audioCtx.createAnalyser();
    analyser.fftSize = 1024;
    source.connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    return () => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      for (let i = 0; i < buf.length; i++) sum += buf[i] * buf[i];
      return Math.sqrt(sum / buf.length);
    };
  }

  function startMeters(remoteStream) {
    const mic = rmsMeter(micStream);
    const remote = rmsMeter(remoteStream);
    meterTimer = setInterval(() => {
      const m = mic();
      const r = remote();
      state.micPeak = Math.max(state.micPeak, m);
      state.remotePeak = Math.max(state.remotePeak, r);
      state.remoteLevel = r;
      $("mic-level").style.width = Math.min(100, m * 300) + "%";
      $("bot-level").style.width = Math.min(100, r * 300) + "%";
    }, 50);
  }

  // ------------------------------------------------------------------ call

  function iceGatheringDone(peer, timeoutMs) {
    // voxpipe's server takes the whole offer at once (no trickle), so wait for the candidates.
    return new Promise((resolve) => {
      if (peer.iceGatheringState === "complete") return resolve();
      const timer = setTimeout(resolve, timeoutMs);
      peer.addEventListener("icegatheringstatechange", () => {
        if (peer.iceGatheringState === "complete") {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async function start() {
    if (pc) return;
    state.error = null;
    setStatus("connecting", "Asking for the microphone…");
    try {
      micStream = await navigator.mediaDevices.getUserMedia({
        audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
      });
    } catch (err) {
      state.error = String(err);
      setStatus("failed", "No microphone: " + err.message + ". Allow microphone access and retry.");
      return;
    }
    audioCtx = new AudioContext();
    let iceServers = [];
    try {
      const cfg = await fetch("webrtc/config", { headers: authHeaders() });
      if (cfg.ok) iceServers = (await cfg.json()).iceServers || [];
    } catch (_) {
      // No config endpoint: host candidates only, fine on a LAN or loopback.
    }
    pc = new RTCPeerConnection({ iceServers });
    micStream.getTracks().forEach((t) => pc.addTrack(t, micStream));
    const channel = pc.createDataChannel("events");
    channel.onopen = () => (state.channelOpen = true);
    channel.onclose = () => (state.channelOpen = false);
    channel.onmessage = (ev) => {
      try {
        onEvent(JSON.parse(ev.data));
      } catch (err) {
        console.warn("voxpipe: bad event from server", ev.data, err);
      }
    };
    pc.ontrack = (ev) => {
      const stream = ev.streams[0] || new MediaStream([ev.track]);
      $("remote").srcObject = stream;
      startMeters(stream);
    };
    pc.onconnectionstatechange = () => {
      state.connectionState = pc ? pc.connectionState : "closed";
      if (state.connectionState === "connected") setStatus("connected", "Connected: speak now.");
      if (state.connectionState === "failed") hangUp("failed", "Connection failed (network or firewall?).");
    };
    setStatus("connecting", "Connecting…");
    try {
      await pc.setLocalDescription(await pc.createOffer());
      await iceGatheringDone(pc, 3000);
      const resp = await fetch("webrtc/offer", {
        method: "POST",
        headers: { "content-type": "application/json", ...authHeaders() },
        body: JSON.stringify({ sdp: pc.localDescription.sdp, type: pc.localDescription.type }),
      });
      if (!resp.ok) throw new Error("server answered " + resp.status + ": " + (await resp.text()));
      const answer = await resp.json();
      state.callId = answer.call_id || null;
      await pc.setRemoteDescription({ sdp: answer.sdp, type: answer.type });
    } catch (err) {
      state.error = String(err);
      hangUp("failed", "Could not connect: " + err.message);
    }
  }

  function hangUp(status = "closed", text = "Call ended.") {
    if (meterTimer) clearInterval(meterTimer);
    meterTimer = null;
    if (pc) pc.close();
    pc = null;
    if (micStream) micStream.getTracks().forEach((t) => t.stop());
    micStream = null;
    if (audioCtx) audioCtx.close();
    audioCtx = null;
    state.connectionState = "closed";
    setStatus(status, text);
  }

  // Receive-side RTP statistics of the bot's audio (bytes, packets, audio energy).
  async function inboundAudioStats() {
    if (!pc) return null;
    const report = await pc.getStats();
    for (const s of report.values()) {
      if (s.type === "inbound-rtp" && s.kind === "audio") {
        return {
          bytesReceived: s.bytesReceived,
          packetsReceived: s.packetsReceived,
          totalAudioEnergy: s.totalAudioEnergy,
          audioLevel: s.audioLevel,
        };
      }
    }
    return null;
  }

  button.addEventListener("click", () => (pc ? hangUp() : start()));
  window.voxpipe = { state, start, hangUp, inboundAudioStats };
})();
