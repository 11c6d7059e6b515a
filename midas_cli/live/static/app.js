// The MIDAS live page: audio from the microphone or a file at 1x goes to the server in 20 ms
// PCM16 frames; each 480 ms chunk comes back as one message (6 JPEG frames + their audio),
// and its frames are drawn at the moment its audio plays, so picture and sound stay together.
// Protocol: docs/live.md.
"use strict";

const FRAME = 320; // samples per frame sent (20 ms at 16 kHz)
const TAG_SPEAK = 1, TAG_LISTEN = 2;
const $ = (id) => document.getElementById(id);

const state = {
  ws: null, ctx: null, node: null, sources: [], playing: [], capturing: false, hasListen: false,
  speakBuf: [], listenBuf: [], bufLen: 0, speakSent: 0, sentAt: new Map(), firstSent: null,
  playTime: 0, display: [], latencies: [], shownTimes: [], chunks: 0,
};
// read by the browser test
window.midasStats = { framesShown: 0, fps: 0, latencies: state.latencies, chunks: 0, prompt: null, error: null,
                      firstFrameS: null };

function setStatus(text) { $("status").textContent = text; }

function percentile(values, q) {
  if (!values.length) return null;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q / 100 * s.length))];
}

function concat(blocks, n) {
  const out = new Float32Array(n);
  let pos = 0;
  for (const b of blocks) { out.set(b.subarray(0, Math.min(b.length, n - pos)), pos); pos += b.length; if (pos >= n) break; }
  return out;
}

function pcmFrame(tag, samples) {
  const buf = new ArrayBuffer(1 + 2 * samples.length);
  const view = new DataView(buf);
  view.setUint8(0, tag);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(1 + 2 * i, Math.max(-32768, Math.min(32767, Math.round(s * 32768))), true);
  }
  return buf;
}

// audio thread → 20 ms frames on the socket (listen before speak, as the protocol asks)
function onBlock(e) {
  if (!state.capturing || !state.ws || state.ws.readyState !== WebSocket.OPEN) return;
  state.speakBuf.push(e.data.speak);
  state.listenBuf.push(e.data.listen);
  state.bufLen += e.data.speak.length;
  while (state.bufLen >= FRAME) {
    const speak = concat(state.speakBuf, state.bufLen), listen = concat(state.listenBuf, state.bufLen);
    if (state.hasListen) state.ws.send(pcmFrame(TAG_LISTEN, listen.subarray(0, FRAME)));
    state.ws.send(pcmFrame(TAG_SPEAK, speak.subarray(0, FRAME)));
    const now = performance.now();
    if (state.firstSent === null) state.firstSent = now;
    state.speakSent += FRAME;
    state.sentAt.set(state.speakSent, now);
    state.speakBuf = [speak.slice(FRAME)];
    state.listenBuf = [listen.slice(FRAME)];
    state.bufLen -= FRAME;
  }
}

async function onChunk(data) {
  const now = performance.now();
  const view = new DataView(data);
  const n = view.getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(data, 4, n)));
  let pos = 4 + n;
  const bitmaps = [];
  for (const size of header.jpeg_bytes) {
    bitmaps.push(createImageBitmap(new Blob([new Uint8Array(data, pos, size)], { type: "image/jpeg" })));
    pos += size;
  }
  const pcm = new Int16Array(data.slice(pos, pos + 2 * header.audio_samples));
  const key = Math.ceil(header.speak_end / FRAME) * FRAME;
  if (state.sentAt.has(key)) {
    state.latencies.push(now - state.sentAt.get(key));
    state.sentAt.delete(key);
    if (state.latencies.length > 500) state.latencies.shift();
  }
  if (window.midasStats.firstFrameS === null && state.firstSent !== null)
    window.midasStats.firstFrameS = (now - state.firstSent) / 1000;
  // play the chunk's audio and schedule its frames on the same clock
  const ctx = state.ctx;
  const buffer = ctx.createBuffer(1, pcm.length, 16000);
  const ch = buffer.getChannelData(0);
  for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
  const src = ctx.createBufferSource();
  src.buffer = buffer;
  src.connect(ctx.destination);
  const start = Math.max(ctx.currentTime + 0.03, state.playTime);
  src.start(start);
  state.playing.push(src);
  src.onended = () => { state.playing = state.playing.filter((s) => s !== src); };
  state.playTime = start + pcm.length / 16000;
  const frames = await Promise.all(bitmaps);
  const dt = pcm.length / 16000 / frames.length;
  frames.forEach((bmp, i) => state.display.push({ t: start + i * dt, bmp }));
  state.chunks += 1;
  window.midasStats.chunks = state.chunks;
  window.midasStats.prompt = header.prompt;
  $("promptInEffect").textContent = header.prompt || "(none)";
  $("gen").textContent = `${header.gen_ms.toFixed(0)} ms`;
  $("queue").textContent = header.queue;
  $("dropped").textContent = header.dropped;
  $("chunks").textContent = state.chunks;
  const last = state.latencies[state.latencies.length - 1];
  if (last !== undefined) {
    $("latLast").textContent = `${last.toFixed(0)} ms`;
    $("latP50").textContent = `${percentile(state.latencies, 50).toFixed(0)} ms`;
    $("latP95").textContent = `${percentile(state.latencies, 95).toFixed(0)} ms`;
  }
}

function draw() {
  const canvas = $("avatar"), g = canvas.getContext("2d");
  if (state.ctx) {
    const t = state.ctx.currentTime;
    while (state.display.length && state.display[0].t <= t) {
      const { bmp } = state.display.shift();
      g.drawImage(bmp, 0, 0, canvas.width, canvas.height);
      bmp.close();
      const now = performance.now();
      state.shownTimes.push(now);
      window.midasStats.framesShown += 1;
    }
    const now = performance.now();
    while (state.shownTimes.length && state.shownTimes[0] < now - 2000) state.shownTimes.shift();
    const fps = state.shownTimes.length / 2;
    window.midasStats.fps = fps;
    $("fps").textContent = fps.toFixed(1);
  }
  requestAnimationFrame(draw);
}

async function decodeFile(input) {
  const file = input.files[0];
  if (!file) return null;
  return await state.ctx.decodeAudioData(await file.arrayBuffer()); // resampled to 16 kHz
}

async function start() {
  $("start").disabled = true;
  try {
    state.ctx = new AudioContext({ sampleRate: 16000 });
    await state.ctx.audioWorklet.addModule("/static/capture-worklet.js");
    state.node = new AudioWorkletNode(state.ctx, "capture", { numberOfInputs: 2, numberOfOutputs: 1,
                                                              outputChannelCount: [1] });
    const mute = state.ctx.createGain();
    mute.gain.value = 0;
    state.node.connect(mute).connect(state.ctx.destination); // pulls the worklet; plays nothing
    state.node.port.onmessage = onBlock;
    const useFile = document.querySelector("input[name=source]:checked").value === "file";
    let speakNode;
    if (useFile) {
      const buffer = await decodeFile($("speakFile"));
      if (!buffer) throw new Error("choose an audio file for the avatar's voice");
      speakNode = state.ctx.createBufferSource();
      speakNode.buffer = buffer;
    } else {
      const media = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false,
        noiseSuppression: false, autoGainControl: false } });
      speakNode = state.ctx.createMediaStreamSource(media);
      state.media = media;
    }
    speakNode.connect(state.node, 0, 0);
    state.sources.push(speakNode);
    const listenBuffer = await decodeFile($("listenFile"));
    if (listenBuffer) {
      const listenNode = state.ctx.createBufferSource();
      listenNode.buffer = listenBuffer;
      listenNode.connect(state.node, 0, 1);
      listenNode.connect(state.ctx.destination); // you hear the other side too
      state.sources.push(listenNode);
      state.hasListen = true;
    }
    const token = new URLSearchParams(location.search).get("token");
    const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws${token ? "?token=" + encodeURIComponent(token) : ""}`;
    const ws = new WebSocket(url);
    ws.binaryType = "arraybuffer";
    state.ws = ws;
    ws.onmessage = (e) => {
      if (typeof e.data !== "string") { onChunk(e.data); return; }
      const msg = JSON.parse(e.data);
      if (msg.type === "ready") {
        setStatus(`live: ${msg.width}×${msg.height} at ${msg.fps} fps`);
        state.capturing = true;
        for (const s of state.sources) if (s.start) s.start();
        $("interrupt").disabled = false;
        $("stop").disabled = false;
      } else if (msg.type === "error") {
        window.midasStats.error = msg.message;
        setStatus(`error: ${msg.message}`);
      } else if (msg.type === "interrupted") {
        setStatus(`interrupted (${msg.flushed_chunks} chunks flushed); listening`);
      } else if (msg.type === "bye") {
        setStatus(`stopped: ${msg.chunks} chunks, ${msg.dropped} dropped`);
      }
    };
    ws.onclose = (e) => { teardown(); if (e.reason) setStatus(`closed: ${e.reason}`); };
    ws.onopen = () => ws.send(JSON.stringify({ type: "hello", sample_rate: 16000, frame_samples: FRAME,
                                               prompt: $("prompt").value }));
  } catch (err) {
    setStatus(`error: ${err.message}`);
    window.midasStats.error = err.message;
    teardown();
  }
}

function flushPlayback() {
  for (const s of state.playing) { try { s.stop(); } catch (e) { /* already ended */ } }
  state.playing = [];
  for (const f of state.display) f.bmp.close();
  state.display = [];
  state.playTime = 0;
}

function interrupt() {
  if (!state.ws) return;
  state.ws.send(JSON.stringify({ type: "interrupt" }));
  // a file stops talking; the microphone goes on (silence from a stopped file keeps the clock)
  const speak = state.sources[0];
  if (speak && speak.buffer) { try { speak.stop(); } catch (e) { /* not started */ } }
  flushPlayback();
  state.sentAt.clear();
}

function stop() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN) state.ws.send(JSON.stringify({ type: "stop" }));
  state.capturing = false;
}

function teardown() {
  state.capturing = false;
  for (const s of state.sources) { try { s.stop && s.stop(); } catch (e) {} }
  state.sources = [];
  if (state.media) state.media.getTracks().forEach((t) => t.stop());
  state.hasListen = false;
  $("start").disabled = false;
  $("interrupt").disabled = true;
  $("stop").disabled = true;
}

function sendPrompt() {
  if (state.ws && state.ws.readyState === WebSocket.OPEN)
    state.ws.send(JSON.stringify({ type: "prompt", text: $("prompt").value }));
}

$("start").onclick = start;
$("stop").onclick = stop;
$("interrupt").onclick = interrupt;
$("sendPrompt").onclick = sendPrompt;
$("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter") sendPrompt(); });
requestAnimationFrame(draw);
