// pixelwise serve's page: send an image to POST /v1/segment?format=png, draw the returned mask over the
// image with an adjustable opacity, count each class's pixels, offer the mask PNG for download.
// No framework, no build step, nothing from other sites (the page's Content-Security-Policy forbids it).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { model: null, base: null, overlay: null, width: 0, height: 0, maskUrl: null };

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
  setState("working", `segmenting ${file.name}…`);
  const started = performance.now();
  let response;
  try {
    response = await fetch("/v1/segment?format=png", {
      method: "POST", body: file, headers: { "Content-Type": file.type || "application/octet-stream" },
    });
  } catch (error) {
    setState("error", "");
    showError(`the server did not answer: ${error.message}`);
    return;
  }
  if (!response.ok) {
    setState("error", "");
    showError(await errorText(response));
    return;
  }
  const maskBlob = await response.blob();
  const seconds = ((performance.now() - started) / 1000).toFixed(2);
  const mask = await createImageBitmap(maskBlob, { colorSpaceConversion: "none", premultiplyAlpha: "none" });
  let base = null;
  try {
    base = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch (ignored) {
    base = null; // a format this browser cannot show (e.g. TIFF): the mask is drawn on grey
  }
  const { counts, overlay } = colourMask(mask);
  state.base = base;
  state.overlay = overlay;
  state.width = mask.width;
  state.height = mask.height;
  if (state.maskUrl) URL.revokeObjectURL(state.maskUrl);
  state.maskUrl = URL.createObjectURL(maskBlob);
  const link = $("download");
  link.href = state.maskUrl;
  link.download = `${file.name.replace(/\.[^.]+$/, "") || "image"}_mask.png`;
  showCounts(counts, mask.width * mask.height);
  $("result").hidden = false;
  draw();
  setState("done", `${file.name}: ${mask.width}×${mask.height} px, segmented in ${seconds} s`);
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
  const binary = classes.length === 2;
  const colours = classes.map((c) => (c.color ? hexToRgb(c.color) : null));
  const counts = new Array(classes.length).fill(0);
  const overlay = document.createElement("canvas");
  overlay.width = width;
  overlay.height = height;
  const overlayContext = overlay.getContext("2d");
  const pixels = overlayContext.createImageData(width, height);
  const out = pixels.data;
  // Multi-class masks are palette PNGs: the canvas gives each pixel its class colour, so the colour names the
  // class (GET /v1/model's colours are the palette's); a colour of no listed class is the background.
  const byColour = new Map();
  colours.forEach((c, index) => { if (c && index > 0) byColour.set((c[0] << 16) | (c[1] << 8) | c[2], index); });
  for (let i = 0, p = 0; i < values.length; i += 4, p += 1) {
    const cls = binary ? (values[i] > 127 ? 1 : 0)
      : (byColour.get((values[i] << 16) | (values[i + 1] << 8) | values[i + 2]) ?? 0);
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
  loadModel();
}

document.addEventListener("DOMContentLoaded", setup);
