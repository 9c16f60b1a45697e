// pixelwise serve's page: send an image to POST /v1/segment?format=png, draw the returned mask over the
// image with an adjustable opacity, count each class's pixels, offer the mask PNG for download. Binary runs can
// answer with a picture instead (format=cutout: the RGBA cutout, or with &background=blur|#rrggbb the foreground
// over a new background), shown as it came and offered for download.
// Camera mode: frames from getUserMedia go to the WebSocket /v1/stream (one in flight at a time), and each
// answered frame is drawn with its own mask (or its foreground on a chosen colour), with the round-trip time.
// No framework, no build step, nothing from other sites (the page's Content-Security-Policy forbids it).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, base: null, overlay: null, picture: null, width: 0, height: 0, maskUrl: null, file: null, ticket: 0 };

// The answer chosen in #answer: the query of POST /v1/segment, the download's name and link text.
const ANSWERS = {
  overlay: { query: () => ({ format: "png" }), suffix: "_mask", what: "the mask" },
  cutout: { query: () => ({ format: "cutout" }), suffix: "_cutout", what: "the cutout" },
  blur: { query: () => ({ format: "cutout", background: "blur" }), suffix: "_background", what: "the picture" },
  colour: {
    query: () => ({ format: "cutout", background: $("answer-colour").value }), suffix: "_background", what: "the picture",
  },
};

function setState(name, message) {
  document.body.dataset.state = name;
  $("status").textContent = message || "";
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = !message;
}

function hexToRgb(hex) {
  const value = parseInt(hex.slice(1), 16);
  return [(value >> 16) & 255, (value >> 8) & 255, value & 255];
}

async function loadModel() {
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) throw new Error((await errorText(response)));
    state.model = await response.json();
  } catch (error) {
    setState("error", "");
    showError(`cannot read the model: ${error.message}`);
    return;
  }
  const m = state.model;
  const dice = m.training && m.training.best_val_dice != null ? `, best validation Dice ${m.training.best_val_dice.toFixed(3)}` : "";
  $("model-info").textContent = `${m.name}: ${m.model}, ${m.classes.length} classes, input ${m.input_size}×${m.input_size} px, ` +
    `threshold ${m.threshold}${dice} (${m.engine} ${m.precision}${m.tta !== "none" ? ", TTA" : ""})`;
  const cutouts = (m.formats || []).includes("cutout");
  for (const option of $("answer").options) {
    if (option.value === "overlay") continue;
    option.disabled = !cutouts;
    option.title = cutouts ? "" : "cutouts need a binary run (background + one foreground class)";
  }
  const mib = (m.limits.max_body_bytes / 1048576).toFixed(0);
  $("limits").textContent = `Up to ${mib} MiB and ${(m.limits.max_pixels / 1e6).toFixed(1)} megapixels. PNG, JPEG, BMP, TIFF, WebP.`;
  setState("ready", "Choose or drop an image.");
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (body && body.error) return `${body.error} (HTTP ${response.status})`;
  } catch (ignored) { /* not JSON */ }
  return `HTTP ${response.status} ${response.statusText}`;
}

async function segment(file) {
  if (!file) return;
  if (!state.model) { showError("the model is not loaded yet"); return; }
  showError("");
  if (file.size > state.model.limits.max_body_bytes) {
    showError(`${file.name} is ${(file.size / 1048576).toFixed(1)} MiB, above this server's limit`);
    return;
  }
  state.file = file;
  const ticket = ++state.ticket; // a newer upload or answer choice wins over this one
  const choice = $("answer").value;
  const answer = ANSWERS[choice];
  setState("working", `segmenting ${file.name}…`);
  const started = performance.now();
  let response;
  try {
    response = await fetch(`/v1/segment?${new URLSearchParams(answer.query())}`, {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
  } catch (error) {
    if (ticket !== state.ticket) return;
    setState("error", "");
    showError(`the server did not answer: ${error.message}`);
    return;
  }
  if (ticket !== state.ticket) return;
  if (!response.ok) {
    setState("error", "");
    showError(await errorText(response));
    return;
  }
  const maskBlob = await response.blob();
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  const mask = await createImageBitmap(maskBlob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  if (ticket !== state.ticket) { mask.close(); return; }
  offerDownload(maskBlob, file, answer);
  if (choice !== "overlay") { // a picture: shown as it came, without counts or an opacity
    showPicture(mask, choice);
    setState("done", `${file.name}: ${mask.width}×${mask.height} px, ${answer.what} in ${seconds} s`);
    return;
  }
  let base = null;
  try {
    base = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (ignored) {
    base = null; // a format this browser cannot show (e.g. TIFF): the mask is drawn on grey
  }
  if (ticket !== state.ticket) return;
  const { counts, overlay } = colourMask(mask);
  state.base = base;
  state.overlay = overlay;
  if (state.picture) state.picture.close();
  state.picture = null;
  state.width = mask.width;
  state.height = mask.height;
  showCounts(counts, mask.width * mask.height);
  showAnswerParts(true);
  $("result").hidden = false;
  draw();
  setState("done", `${file.name}: ${mask.width}×${mask.height} px, segmented in ${seconds} s`);
}

// The answer's PNG behind the download link, named as pixelwise predict names it (<stem>_mask.png,
// <stem>_cutout.png, <stem>_background.png).
function offerDownload(blob, file, answer) {
  if (state.maskUrl) URL.revokeObjectURL(state.maskUrl);
  state.maskUrl = URL.createObjectURL(blob);
  const link = $("download");
  link.href = state.maskUrl;
  link.download = `${file.name.replace(/\.[^.]+$/, "") || "image"}${answer.suffix}.png`;
  link.textContent = `download ${answer.what} (PNG)`;
}

// The mask's parts of the result (opacity, class counts) shown for the overlay, hidden for pictures.
function showAnswerParts(overlay) {
  $("opacity-controls").hidden = !overlay;
  $("classes-title").hidden = !overlay;
  $("pixel-counts").hidden = !overlay;
}

function showPicture(picture, choice) {
  if (state.picture) state.picture.close();
  state.picture = picture;
  state.overlay = null;
  state.base = null;
  state.width = picture.width;
  state.height = picture.height;
  showAnswerParts(false);
  $("result").hidden = false;
  const canvas = $("canvas");
  canvas.width = picture.width;
  canvas.height = picture.height;
  canvas.dataset.answer = choice === "cutout" ? "cutout" : "picture";
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  context.drawImage(picture, 0, 0);
}

// The class of a mask pixel from its RGBA values at offset i. Binary masks are 0/255 grey; multi-class masks
// are palette PNGs: the canvas gives each pixel its class colour, so the colour names the class (GET
// /v1/model's colours are the palette's); a colour of no listed class is the background.
function maskReader(classes) {
  const byColour = new Map();
  classes.forEach((c, index) => {
    if (c.color && index > 0) {
      const [r, g, b] = hexToRgb(c.color);
      byColour.set((r << 16) | (g << 8) | b, index);
    }
  });
  if (classes.length === 2) return (values, i) => (values[i] > 127 ? 1 : 0);
  return (values, i) => byColour.get((values[i] << 16) | (values[i + 1] << 8) | values[i + 2]) ?? 0;
}

// The mask PNG's values → per-class pixel counts and an RGBA canvas of the class colours.
function colourMask(mask) {
  const { width, height } = mask;
  const reader = document.createElement("canvas");
  reader.width = width;
  reader.height = height;
  const readContext = reader.getContext("2d", { willReadFrequently: true });
  readContext.drawImage(mask, 0, 0);
  const values = readContext.getImageData(0, 0, width, height).data;
  const classes = state.model.classes;
  const classOf = maskReader(classes);
  const colours = classes.map((c) => (c.color ? hexToRgb(c.color) : null));
  const counts = new Array(classes.length).fill(0);
  const overlay = document.createElement("canvas");
  overlay.width = width;
  overlay.height = height;
  const overlayContext = overlay.getContext("2d");
  const pixels = overlayContext.createImageData(width, height);
  const out = pixels.data;
  for (let i = 0; i < values.length; i += 4) {
    const cls = classOf(values, i);
    counts[cls] += 1;
    const colour = colours[cls];
    if (colour) {
      out[i] = colour[0];
      out[i + 1] = colour[1];
      out[i + 2] = colour[2];
      out[i + 3] = 255;
    }
  }
  overlayContext.putImageData(pixels, 0, 0);
  return { counts, overlay };
}

function showCounts(counts, total) {
  const list = $("pixel-counts");
  list.replaceChildren();
  state.model.classes.forEach((c, index) => {
    const item = document.createElement("li");
    item.dataset.class = String(index);
    item.dataset.name = c.name;
    item.dataset.pixels = String(counts[index]);
    const swatch = document.createElement("span");
    swatch.className = c.color ? "swatch" : "swatch swatch-none";
    if (c.color) swatch.style.backgroundColor = c.color;
    const text = document.createElement("span");
    const percent = total ? (100 * counts[index] / total).toFixed(2) : "0.00";
    text.textContent = `${c.name}: ${counts[index].toLocaleString("en-US")} px (${percent} %)`;
    item.append(swatch, text);
    list.append(item);
  });
}

function draw() {
  const canvas = $("canvas");
  canvas.width = state.width;
  canvas.height = state.height;
  canvas.dataset.answer = "overlay";
  const context = canvas.getContext("2d");
  if (state.base) {
    context.drawImage(state.base, 0, 0, state.width, state.height);
  } else {
    context.fillStyle = "#777";
    context.fillRect(0, 0, state.width, state.height);
  }
  const opacity = Number($("opacity").value) / 100;
  context.globalAlpha = opacity;
  context.drawImage(state.overlay, 0, 0);
  context.globalAlpha = 1;
  canvas.dataset.opacity = String(opacity);
}

// ---------------------------------------------------------------------------------------------------------
// Camera mode. Protocol (pixelwise/serve/stream.py): each binary message, both ways, is a 4-byte big-endian
// header length, a JSON header ({"seq": n} out; {"seq", "server_ms", ...} back), then the image (a JPEG out,
// the mask PNG back); errors come back as one-line JSON text messages.
const CAMERA_MAX_SIDE = 640; // frames are sent at most this wide or tall
const CAMERA_JPEG_QUALITY = 0.8;
const camera = {
  running: false, socket: null, stream: null, seq: 0, pending: null, timer: null, minInterval: 0, lastSent: 0,
  frame: null, reader: null, overlay: null, drawTimes: [],
  // Read by tests and benchmarks/camera.py: frames sent, masks drawn, and the last 1000 timings (ms).
  stats: { sent: 0, drawn: 0, errors: 0, rtt: [], server: [], latency: [] },
};
window.pixelwiseCamera = camera.stats;

function cameraCanvas() { return $("camera-canvas"); }

function setCameraStatus(message) { $("camera-timing").textContent = message; }

async function startCamera() {
  if (!state.model) { showError("the model is not loaded yet"); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("the camera needs a secure page: open this server as http://localhost:PORT/ or over https");
    return;
  }
  showError("");
  $("camera-toggle").disabled = true;
  try {
    camera.stream = await navigator.mediaDevices.getUserMedia({
      video: { width: { ideal: 640 }, height: { ideal: 360 } }, audio: false,
    });
  } catch (error) {
    $("camera-toggle").disabled = false;
    showError(`no camera: ${error.message || error.name}`);
    return;
  }
  const video = $("camera-video");
  video.srcObject = camera.stream;
  const settings = camera.stream.getVideoTracks()[0].getSettings();
  camera.minInterval = 1000 / (settings.frameRate || 30); // no frame sent twice: at most the camera's rate
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  let socket;
  try {
    await video.play();
    socket = new WebSocket(`${scheme}://${location.host}/v1/stream?format=png`);
  } catch (error) {
    camera.stream.getTracks().forEach((track) => track.stop());
    camera.stream = null;
    $("camera-toggle").disabled = false;
    showError(`cannot start the camera stream: ${error.message || error.name}`);
    return;
  }
  socket.binaryType = "arraybuffer";
  socket.addEventListener("open", () => scheduleFrame(0));
  socket.addEventListener("message", onCameraMessage);
  socket.addEventListener("close", (event) => {
    if (camera.socket === socket && camera.running) {
      stopCamera(`the server closed the stream (${event.code}${event.reason ? `: ${event.reason}` : ""})`);
    }
  });
  camera.socket = socket;
  camera.running = true;
  camera.pending = null;
  camera.drawTimes = [];
  document.body.dataset.camera = "on";
  $("camera-toggle").textContent = "stop the camera";
  $("camera-toggle").disabled = false;
  cameraCanvas().hidden = false;
  setCameraStatus("connecting…");
}

function stopCamera(message) {
  camera.running = false;
  clearTimeout(camera.timer);
  if (camera.socket) camera.socket.close(1000);
  camera.socket = null;
  camera.pending = null;
  if (camera.stream) camera.stream.getTracks().forEach((track) => track.stop());
  camera.stream = null;
  $("camera-video").srcObject = null;
  document.body.dataset.camera = "off";
  $("camera-toggle").textContent = "start the camera";
  if (message) showError(message);
  setCameraStatus(camera.stats.drawn ? `${$("camera-timing").textContent} (stopped)` : "");
}

function scheduleFrame(delay) {
  clearTimeout(camera.timer);
  camera.timer = setTimeout(sendFrame, Math.max(0, delay));
}

// Capture the video's current frame, JPEG it and send it: only when no frame is in flight.
function sendFrame() {
  const video = $("camera-video");
  const socket = camera.socket;
  if (!camera.running || camera.pending || !socket || socket.readyState !== WebSocket.OPEN) return;
  const wait = camera.lastSent + camera.minInterval - performance.now();
  if (video.readyState < 2 || !video.videoWidth || wait > 1) {
    scheduleFrame(video.readyState < 2 ? 20 : wait);
    return;
  }
  const scale = Math.min(1, CAMERA_MAX_SIDE / Math.max(video.videoWidth, video.videoHeight));
  const width = Math.round(video.videoWidth * scale);
  const height = Math.round(video.videoHeight * scale);
  if (!camera.frame) camera.frame = document.createElement("canvas");
  const frame = camera.frame;
  if (frame.width !== width || frame.height !== height) { frame.width = width; frame.height = height; }
  frame.getContext("2d").drawImage(video, 0, 0, width, height);
  const seq = camera.seq++;
  const pending = { seq, captured: performance.now(), sent: 0 };
  camera.pending = pending;
  camera.lastSent = pending.captured;
  frame.toBlob((jpeg) => {
    if (camera.pending !== pending || camera.socket !== socket || socket.readyState !== WebSocket.OPEN) return;
    const header = new TextEncoder().encode(JSON.stringify({ seq }));
    const length = new Uint8Array(4);
    new DataView(length.buffer).setUint32(0, header.length);
    pending.sent = performance.now();
    socket.send(new Blob([length, header, jpeg]));
    camera.stats.sent += 1;
    cameraCanvas().dataset.sent = String(camera.stats.sent);
  }, "image/jpeg", CAMERA_JPEG_QUALITY);
}

function remember(list, value) {
  list.push(value);
  if (list.length > 1000) list.shift();
}

async function onCameraMessage(event) {
  const pending = camera.pending;
  if (typeof event.data === "string") { // one line of JSON: {"error", "status", "seq"?}
    let error = {};
    try { error = JSON.parse(event.data); } catch (ignored) { error = { error: event.data }; }
    camera.stats.errors += 1;
    showError(`camera: ${error.error}${error.status ? ` (${error.status})` : ""}`);
    if (pending && error.seq === pending.seq) { camera.pending = null; scheduleFrame(camera.minInterval); }
    return;
  }
  const received = performance.now();
  const view = new DataView(event.data);
  const size = view.getUint32(0);
  const header = JSON.parse(new TextDecoder().decode(new Uint8Array(event.data, 4, size)));
  if (!pending || header.seq !== pending.seq) return; // an answer from before a restart
  const blob = new Blob([new Uint8Array(event.data, 4 + size)], { type: header.media_type });
  const mask = await createImageBitmap(blob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  if (camera.pending !== pending) return; // stopped meanwhile
  drawCameraFrame(mask);
  const drawn = performance.now();
  const stats = camera.stats;
  stats.drawn += 1;
  remember(stats.rtt, received - pending.sent);
  remember(stats.server, header.server_ms);
  remember(stats.latency, drawn - pending.captured);
  camera.drawTimes.push(drawn);
  if (camera.drawTimes.length > 30) camera.drawTimes.shift();
  const times = camera.drawTimes;
  const fps = times.length > 1 ? (1000 * (times.length - 1)) / (times[times.length - 1] - times[0]) : 0;
  const canvas = cameraCanvas();
  canvas.dataset.drawn = String(stats.drawn);
  canvas.dataset.rttMs = (received - pending.sent).toFixed(1);
  const roundTrip = (received - pending.sent).toFixed(0);
  setCameraStatus(`round trip ${roundTrip} ms (server ${header.server_ms.toFixed(0)} ms), ` +
    `${fps.toFixed(1)} frames/s, ${mask.width}×${mask.height} px`);
  mask.close();
  camera.pending = null;
  scheduleFrame(pending.captured + camera.minInterval - performance.now());
}

// The sent frame with its mask: the class colours over it (the opacity slider's), or its foreground on the
// chosen colour. Drawn from the frame that was sent, so the mask always lies where it was found.
function drawCameraFrame(mask) {
  const frame = camera.frame;
  const { width, height } = frame;
  const canvas = cameraCanvas();
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  if (!camera.reader) camera.reader = document.createElement("canvas");
  const reader = camera.reader;
  if (reader.width !== width || reader.height !== height) { reader.width = width; reader.height = height; }
  const readContext = reader.getContext("2d", { willReadFrequently: true });
  readContext.clearRect(0, 0, width, height);
  readContext.drawImage(mask, 0, 0, width, height);
  const values = readContext.getImageData(0, 0, width, height).data;
  const classes = state.model.classes;
  const classOf = maskReader(classes);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.globalAlpha = 1;
  context.drawImage(frame, 0, 0);
  let foreground = 0;
  if ($("camera-view").value === "cutout") {
    const [r, g, b] = hexToRgb($("camera-background").value);
    const pixels = context.getImageData(0, 0, width, height);
    const out = pixels.data;
    for (let i = 0; i < values.length; i += 4) {
      if (classOf(values, i)) { foreground += 1; continue; }
      out[i] = r; out[i + 1] = g; out[i + 2] = b; out[i + 3] = 255;
    }
    context.putImageData(pixels, 0, 0);
  } else {
    const colours = classes.map((c) => (c.color ? hexToRgb(c.color) : null));
    if (!camera.overlay) camera.overlay = document.createElement("canvas");
    const overlay = camera.overlay;
    if (overlay.width !== width || overlay.height !== height) { overlay.width = width; overlay.height = height; }
    const overlayContext = overlay.getContext("2d");
    const pixels = overlayContext.createImageData(width, height);
    const out = pixels.data;
    for (let i = 0; i < values.length; i += 4) {
      const cls = classOf(values, i);
      if (!cls) continue;
      foreground += 1;
      const colour = colours[cls];
      if (colour) { out[i] = colour[0]; out[i + 1] = colour[1]; out[i + 2] = colour[2]; out[i + 3] = 255; }
    }
    overlayContext.putImageData(pixels, 0, 0);
    context.globalAlpha = Number($("opacity").value) / 100;
    context.drawImage(overlay, 0, 0);
    context.globalAlpha = 1;
  }
  canvas.dataset.foreground = String(foreground);
  canvas.dataset.view = $("camera-view").value;
}

function setup() {
  const drop = $("drop");
  const input = $("file");
  input.addEventListener("change", () => segment(input.files[0]));
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  // A file dropped anywhere on the page is segmented (instead of the browser opening it).
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    drop.classList.remove("over");
    const file = event.dataTransfer && event.dataTransfer.files[0];
    if (file) segment(file);
  });
  drop.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") { event.preventDefault(); input.click(); }
  });
  $("opacity").addEventListener("input", () => {
    $("opacity-value").textContent = `${$("opacity").value} %`;
    if (state.overlay) draw();
  });
  $("answer").addEventListener("change", () => { // the last image again, answered the new way
    $("answer-colour").hidden = $("answer").value !== "colour";
    if (state.file) segment(state.file);
  });
  $("answer-colour").addEventListener("change", () => { if (state.file) segment(state.file); });
  $("camera-toggle").addEventListener("click", () => (camera.running ? stopCamera("") : startCamera()));
  loadModel();
}

document.addEventListener("DOMContentLoaded", setup);
